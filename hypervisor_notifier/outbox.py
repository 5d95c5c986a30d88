"""The outbox: events waiting for the broker's confirm, in order.

The service puts each event in the outbox; the publisher takes entries to
publish and confirms them once the broker acked them. An entry leaves the
outbox only on :meth:`Outbox.confirm`, so a broker outage loses nothing:
after a reconnect the publisher releases what was in flight and sends it
again, in the original order.

:class:`SQLiteOutbox` also keeps the entries in a SQLite database (WAL), so a
crash of the service loses nothing either: a restarted service publishes
what its predecessor had not had confirmed.

The outbox is bounded. When full, it drops the oldest waiting event of an
instance that has a later event waiting (coalescing, counted): the latest
state of every instance is never dropped.

Threading contract: ``put`` may be called from any one thread; ``take``,
``confirm`` and ``release_inflight`` from the publisher thread only.
"""

from __future__ import annotations

import abc
import collections
import contextlib
import dataclasses
import logging
import os
import select
import sqlite3
import threading
import time
from typing import Any

from hypervisor_notifier import wire
from hypervisor_notifier.events import LifecycleEvent, MalformedEvent, PowerState
from hypervisor_notifier.signing import Signer

LOG = logging.getLogger(__name__)

#: The default bound: about 100 MB of events, hours of a busy host's events.
MAX_EVENTS = 100_000


@dataclasses.dataclass(frozen=True)
class Entry:
    """An event in the outbox.

    Arguments:
        entry_id: Position in the outbox; larger is later.
        event: The event.
        body: Its encoded notification body, ready to publish.
        put_at: ``time.monotonic()`` when it entered the outbox (or was recovered).

    """

    entry_id: int
    event: LifecycleEvent
    body: bytes
    put_at: float = dataclasses.field(default_factory=time.monotonic, compare=False)


class Outbox(abc.ABC):
    """Ordered events awaiting confirmation, with a file descriptor to wait on.

    ``wake_fd`` becomes readable when an entry is put; the publisher waits on
    it (together with its broker socket) in ``select`` instead of polling.
    """

    #: Events dropped by coalescing since start.
    coalesced = 0

    def __init__(self) -> None:
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._signalled = False

    @property
    def wake_fd(self) -> int:
        """A descriptor that is readable while entries may be waiting to be taken."""
        return self._wake_r

    def wake(self) -> None:
        """Make ``wake_fd`` readable (a put does it; so does a stop request)."""
        # One byte at most in the pipe: the flag keeps writers from filling it.
        if not self._signalled:
            self._signalled = True
            with contextlib.suppress(BlockingIOError):
                os.write(self._wake_w, b"!")

    def clear_wake(self) -> None:
        """Consume the wake signal; call before ``take`` so no put is missed."""
        # Read only when readable: eventlet's green os.read (a publisher in a
        # monkey-patched process) waits on an empty non-blocking pipe.
        if select.select([self._wake_r], [], [], 0)[0]:
            with contextlib.suppress(BlockingIOError):
                os.read(self._wake_r, 64)
        # Cleared after the read: a put that saw the flag still set has
        # already appended its entry, which the following take returns.
        self._signalled = False

    def close(self) -> None:
        """Release the wake descriptors."""
        os.close(self._wake_r)
        os.close(self._wake_w)

    @property
    def problem(self) -> str | None:
        """Why the outbox does not keep its promise now (not durable), or None."""
        return None

    def known_states(self) -> dict[str, tuple[str, PowerState]]:
        """The last state put for each instance by a previous run: {uuid: (name, state)}."""
        return {}

    def forget_states(self, uuids: list[str]) -> None:  # noqa: B027 - a hook: none kept here
        """Stop keeping the last state of these instances (they are gone)."""

    @abc.abstractmethod
    def put(self, event: LifecycleEvent) -> None:
        """Append an event; it stays until confirmed (or coalesced when the outbox is full)."""

    @abc.abstractmethod
    def take(self, limit: int) -> list[Entry]:
        """Return up to ``limit`` waiting entries, oldest first, and mark them in flight."""

    @abc.abstractmethod
    def confirm(self, entries: list[Entry]) -> None:
        """Remove entries the broker confirmed."""

    @abc.abstractmethod
    def release_inflight(self) -> None:
        """Return every in-flight entry to the waiting ones, ahead of newer entries, in order."""

    @abc.abstractmethod
    def oldest_age(self) -> float:
        """Seconds the oldest unconfirmed entry has waited (0 when empty)."""

    @abc.abstractmethod
    def __len__(self) -> int:
        """Number of entries not yet confirmed (waiting or in flight)."""


class MemoryOutbox(Outbox):
    """An outbox in memory: survives broker outages, not a restart of the service.

    Arguments:
        max_events: The bound beyond which older events of an instance are coalesced.
        signer: Signs each body as it is put (once: a resent body is the same,
            and keeps its signature across a restart).

    """

    def __init__(self, max_events: int = MAX_EVENTS, *, signer: Signer | None = None) -> None:
        super().__init__()
        self.max_events = max_events
        self.signer = signer
        self._lock = threading.Lock()
        self._waiting: collections.deque[Entry] = collections.deque()
        self._inflight: dict[int, Entry] = {}
        # Waiting (not in flight) entries per instance: in-flight ones are older
        # and already sent, so a waiting entry is its instance's latest when it
        # is the only waiting one.
        self._waiting_per_instance: collections.Counter[str] = collections.Counter()
        self._next_id = 1

    def put(self, event: LifecycleEvent) -> None:
        """See :meth:`Outbox.put`."""
        body = wire.encode(event, self.signer)
        with self._lock:
            entry = Entry(self._next_id, event, body)
            self._next_id += 1
            self._store(entry)
            self._waiting.append(entry)
            self._waiting_per_instance[event.instance_uuid] += 1
            if len(self._waiting) + len(self._inflight) > self.max_events:
                self._coalesce()
        self.wake()

    def take(self, limit: int) -> list[Entry]:
        """See :meth:`Outbox.take`."""
        with self._lock:
            count = min(limit, len(self._waiting))
            taken = [self._waiting.popleft() for _ in range(count)]
            for entry in taken:
                self._inflight[entry.entry_id] = entry
                self._uncount(entry)
        return taken

    def confirm(self, entries: list[Entry]) -> None:
        """See :meth:`Outbox.confirm`."""
        with self._lock:
            removed = [e for e in entries if self._inflight.pop(e.entry_id, None) is not None]
            self._confirmed(removed)

    def release_inflight(self) -> None:
        """See :meth:`Outbox.release_inflight`."""
        with self._lock:
            released = sorted(self._inflight.values(), key=lambda entry: entry.entry_id)
            self._inflight.clear()
            self._waiting.extendleft(reversed(released))
            self._waiting_per_instance.update(entry.event.instance_uuid for entry in released)
        if released:
            self.wake()

    def oldest_age(self) -> float:
        """See :meth:`Outbox.oldest_age`."""
        with self._lock:
            # The oldest of each: the head of the waiting queue, the first put in flight.
            heads = [self._waiting[0]] if self._waiting else []
            heads += [next(iter(self._inflight.values()))] if self._inflight else []
        return time.monotonic() - min(entry.put_at for entry in heads) if heads else 0.0

    def __len__(self) -> int:
        with self._lock:
            return len(self._waiting) + len(self._inflight)

    def _coalesce(self) -> None:
        """Drop the oldest waiting entries of instances with later ones, down to the bound."""
        excess = len(self._waiting) + len(self._inflight) - self.max_events
        dropped = []
        for entry in self._waiting:
            if len(dropped) >= excess:
                break
            if self._waiting_per_instance[entry.event.instance_uuid] > 1:
                self._uncount(entry)
                dropped.append(entry)
        if not dropped:
            return  # every waiting entry is an instance's latest: keep them all
        gone = {entry.entry_id for entry in dropped}
        self._waiting = collections.deque(e for e in self._waiting if e.entry_id not in gone)
        self._dropped(dropped)
        self.coalesced += len(dropped)
        LOG.warning(
            "outbox full (%d events): dropped %d older events of instances with later ones",
            self.max_events,
            len(dropped),
        )

    def _uncount(self, entry: Entry) -> None:
        """An entry stopped waiting; forget instances with none left (UUIDs churn)."""
        uuid = entry.event.instance_uuid
        self._waiting_per_instance[uuid] -= 1
        if not self._waiting_per_instance[uuid]:
            del self._waiting_per_instance[uuid]

    # Hooks for a durable subclass; called with the lock held.

    def _store(self, entry: Entry) -> None:
        """Persist a new entry."""

    def _confirmed(self, entries: list[Entry]) -> None:
        """Forget entries the broker confirmed (in order)."""

    def _dropped(self, entries: list[Entry]) -> None:
        """Forget coalesced entries."""


class SQLiteOutbox(MemoryOutbox):
    """An outbox that also survives a crash of the service: SQLite in WAL mode.

    Each event is committed when it is put, before ``put`` returns (with the
    last state of its instance, in the same transaction): an event the
    service accepted is not lost by its crash. Confirmed entries are deleted
    in the groups the broker acks them. Entries left by a previous run are
    loaded at start and published first.

    With ``synchronous = normal`` a commit survives a crash of the service
    but not a power cut of the host (which takes its guests down too; the
    resync after the reboot reports their states); ``full`` survives both,
    at about ten times the cost per event.

    If the file cannot be opened or written (disk full, read-only), the
    outbox goes on in memory, says so in :attr:`problem`, and moves the file
    aside: its states stopped following what was published, so the next
    start must not trust them.

    Arguments:
        path: The database file; its directory is created if missing.
        max_events: The coalescing bound.
        synchronous: ``normal`` or ``full`` (SQLite's ``PRAGMA synchronous``).
        signer: See :class:`MemoryOutbox`.

    """

    def __init__(
        self,
        path: str,
        max_events: int = MAX_EVENTS,
        synchronous: str = "normal",
        *,
        signer: Signer | None = None,
    ) -> None:
        super().__init__(max_events, signer=signer)
        self.path = path
        self._problem: str | None = None
        self._db: sqlite3.Connection | None = None
        try:
            self._db = self._open(path, synchronous)
            self._recover(self._db)
        except (sqlite3.Error, OSError) as exc:
            self._degrade(exc)

    @property
    def problem(self) -> str | None:
        """See :attr:`Outbox.problem`."""
        return self._problem

    @staticmethod
    def _open(path: str, synchronous: str) -> sqlite3.Connection:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        # isolation_level=None: the transactions are ours (BEGIN ... COMMIT below).
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={'FULL' if synchronous == 'full' else 'NORMAL'}")
        db.execute("CREATE TABLE IF NOT EXISTS events (id INTEGER PRIMARY KEY, body BLOB)")
        # The last state put for each instance: a restart resyncs against it.
        db.execute("CREATE TABLE IF NOT EXISTS states (uuid TEXT PRIMARY KEY, name, power_state)")
        return db

    def _recover(self, db: sqlite3.Connection) -> None:
        """Load the entries a previous run left, in order."""
        rows = db.execute("SELECT id, body FROM events ORDER BY id").fetchall()
        unreadable = []
        for entry_id, body in rows:
            try:
                event = wire.decode(body)
            except MalformedEvent:
                unreadable.append(entry_id)
                continue
            self._waiting.append(Entry(entry_id, event, body))
            self._waiting_per_instance[event.instance_uuid] += 1
        if unreadable:
            LOG.error("outbox %s: dropping %d unreadable entries", self.path, len(unreadable))
            db.executemany("DELETE FROM events WHERE id = ?", [(i,) for i in unreadable])
        if rows:
            self._next_id = rows[-1][0] + 1
            LOG.info("outbox %s: %d events from the previous run", self.path, len(self._waiting))
            self.wake()

    def known_states(self) -> dict[str, tuple[str, PowerState]]:
        """See :meth:`Outbox.known_states`: confirmed states, then those still waiting."""
        with self._lock:
            rows = self._query("SELECT uuid, name, power_state FROM states")
            rows += _state_rows([*self._inflight.values(), *self._waiting])
        states = {}
        for uuid, name, code in rows:
            with contextlib.suppress(ValueError):  # a state this version does not know
                states[uuid] = (name, PowerState(code))
        return states

    def forget_states(self, uuids: list[str]) -> None:
        """See :meth:`Outbox.forget_states`."""
        with self._lock:
            self._transaction(("DELETE FROM states WHERE uuid = ?", [(uuid,) for uuid in uuids]))

    def _store(self, entry: Entry) -> None:
        # The only write before publishing: one statement, which autocommit commits.
        if self._db is None:
            return
        try:
            self._db.execute("INSERT INTO events VALUES (?, ?)", (entry.entry_id, entry.body))
        except sqlite3.Error as exc:
            self._degrade(exc)

    def _confirmed(self, entries: list[Entry]) -> None:
        # Off the latency path: the last state of an instance is recorded once its
        # event is confirmed; known_states() adds those still waiting.
        if entries:
            self._transaction(
                _deletion(entries),
                ("INSERT OR REPLACE INTO states VALUES (?, ?, ?)", _state_rows(entries)),
            )

    def _dropped(self, entries: list[Entry]) -> None:
        if entries:
            self._transaction(_deletion(entries))

    def _query(self, sql: str) -> list[Any]:
        """The rows of a query; none once degraded (a failure degrades the outbox)."""
        if self._db is None:
            return []
        try:
            return self._db.execute(sql).fetchall()
        except sqlite3.Error as exc:
            self._degrade(exc)
            return []

    def _transaction(self, *statements: tuple[str, list[tuple[object, ...]]]) -> None:
        """Run the statements in one transaction; a failure degrades the outbox."""
        db = self._db
        if db is None:
            return
        try:
            db.execute("BEGIN")
            for sql, rows in statements:
                db.executemany(sql, rows)
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            self._degrade(exc)

    def _degrade(self, exc: Exception) -> None:
        """Go on in memory (publishing matters more than durability); move the file aside."""
        db, self._db = self._db, None
        self._problem = f"outbox {self.path} is not usable ({exc}): events are kept in memory only"
        LOG.error("%s; publishing goes on", self._problem)
        if db is not None:
            with contextlib.suppress(sqlite3.Error):
                db.close()
        # Renaming needs no space; a file that cannot be renamed is no danger either.
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(OSError):
                os.replace(self.path + suffix, f"{self.path}.unusable{suffix}")

    def close(self) -> None:
        """Close the database and the wake descriptors."""
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None
        super().close()


def _deletion(entries: list[Entry]) -> tuple[str, list[tuple[object, ...]]]:
    """The statement that deletes ``entries`` from the events table."""
    return "DELETE FROM events WHERE id = ?", [(entry.entry_id,) for entry in entries]


def _state_rows(entries: list[Entry]) -> list[tuple[str, str, int]]:
    """(uuid, name, power state) of each entry's event, in entry order."""
    ordered = sorted(entries, key=lambda entry: entry.entry_id)
    return [
        (e.event.instance_uuid, e.event.instance_name, int(e.event.power_state)) for e in ordered
    ]
