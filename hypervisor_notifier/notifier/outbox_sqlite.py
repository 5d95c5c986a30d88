"""The durable outbox: :class:`~.outbox.MemoryOutbox` kept in SQLite too.

A crash of the service loses nothing: a restarted service publishes what its
predecessor had not had confirmed (see :mod:`hypervisor_notifier.notifier.outbox` for
the contract every outbox keeps).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
from typing import Any

from hypervisor_notifier import wire
from hypervisor_notifier.events import MalformedEvent, PowerState
from hypervisor_notifier.notifier.outbox import MAX_EVENTS, Entry, MemoryOutbox
from hypervisor_notifier.notifier.outbox_checkpoint import Checkpointer
from hypervisor_notifier.signing import Signer

LOG = logging.getLogger(__name__)


class SQLiteOutbox(MemoryOutbox):
    """An outbox that also survives a crash of the service: SQLite in WAL mode.

    The events of a ``put_many`` are committed in one transaction before it
    returns (group commit): an event the service accepted is not lost by its
    crash. The log is copied into the database by a thread of its own
    (:mod:`~hypervisor_notifier.notifier.outbox_checkpoint`), never inside a
    commit, which then never waits for the disk under the outbox's lock.
    Confirmed entries are deleted in the groups the broker acks them.
    Entries left by a previous run are loaded at start and published first.

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
        self._checkpointer: Checkpointer | None = None
        try:
            self._db = self._open(path, synchronous)
            self._recover(self._db)
            self._checkpointer = Checkpointer(path, self._db)
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

    def _store(self, entries: list[Entry]) -> None:
        # The only write before publishing: the whole batch in one transaction.
        self._transaction(
            ("INSERT INTO events VALUES (?, ?)", [(e.entry_id, e.body) for e in entries])
        )

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
            return
        if self._checkpointer is not None:
            self._checkpointer.due()

    def _degrade(self, exc: Exception) -> None:
        """Go on in memory (publishing matters more than durability); move the file aside."""
        db, self._db = self._db, None
        self._stop_checkpoints()
        self._problem = f"outbox {self.path} is not usable ({exc}): events are kept in memory only"
        LOG.error("%s; publishing goes on", self._problem)
        if db is not None:
            with contextlib.suppress(sqlite3.Error):
                db.close()
        # Renaming needs no space; a file that cannot be renamed is no danger either.
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(OSError):
                os.replace(self.path + suffix, f"{self.path}.unusable{suffix}")

    def _stop_checkpoints(self) -> None:
        checkpointer, self._checkpointer = self._checkpointer, None
        if checkpointer is not None:
            checkpointer.stop()

    def close(self) -> None:
        """Close the database and the wake descriptors."""
        self._stop_checkpoints()
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
