"""The outbox: events waiting for the broker's confirm, in order.

The service puts events in the outbox, every batch the backend reported at
once together (:meth:`Outbox.put_many`); the publisher takes entries to
publish and confirms them once the broker acked them. An entry leaves the
outbox only on :meth:`Outbox.confirm`, so a broker outage loses nothing:
after a reconnect the publisher releases what was in flight and sends it
again, in the original order.

:class:`~hypervisor_notifier.notifier.outbox_sqlite.SQLiteOutbox` also keeps the
entries in a SQLite database (WAL), so a crash of the service loses nothing
either: a restarted service publishes what its predecessor had not had
confirmed.

The outbox is bounded. When full, it drops the oldest waiting event of an
instance that has a later event waiting (coalescing, counted): the latest
state of every instance is never dropped.

Threading contract: ``put`` and ``put_many`` may be called from any one thread; ``take``,
``confirm`` and ``release_inflight`` from the publisher thread only.
"""

from __future__ import annotations

import abc
import collections
import contextlib
import dataclasses
import logging
import os
import threading
import time

from hypervisor_notifier import wire
from hypervisor_notifier.conf import outbox as outbox_conf
from hypervisor_notifier.events import PowerState
from hypervisor_notifier.fdwait import readable
from hypervisor_notifier.signing import Signer

LOG = logging.getLogger(__name__)

#: The default bound (``[outbox] max_events``).
MAX_EVENTS = outbox_conf.MAX_EVENTS


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
    event: wire.WireEvent
    body: bytes
    put_at: float = dataclasses.field(default_factory=time.monotonic, compare=False)


class Outbox(abc.ABC):
    """Ordered events awaiting confirmation, with a file descriptor to wait on.

    ``wake_fd`` becomes readable when an entry is put; the publisher waits on
    it (together with its broker socket) instead of polling.
    """

    #: Events dropped by coalescing since start.
    coalesced = 0
    #: True when the outbox file was found damaged at start (kept aside for inspection).
    damaged: bool = False

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
        if readable([self._wake_r], 0):
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

    @property
    def durable(self) -> bool:
        """Whether the entries survive a crash of the service now."""
        return False

    @property
    def last_seq(self) -> int:
        """The highest ``seq`` a previous run issued, as far as this outbox knows (0: none)."""
        return 0

    def known_states(self) -> dict[str, tuple[str, PowerState]]:
        """The last state put for each instance by a previous run: {uuid: (name, state)}."""
        return {}

    def forget_states(self, uuids: list[str]) -> None:  # noqa: B027 - a hook: none kept here
        """Stop keeping the last state of these instances (they are gone)."""

    def put(self, event: wire.WireEvent) -> None:
        """Append one event: :meth:`put_many` of one."""
        self.put_many([event])

    @abc.abstractmethod
    def put_many(self, events: list[wire.WireEvent]) -> None:
        """Append events in order, together; each stays until confirmed (or coalesced when full).

        A durable outbox commits the batch in one transaction before it
        returns, and before any of its events can be taken for publishing.
        """

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

    def put_many(self, events: list[wire.WireEvent]) -> None:
        """See :meth:`Outbox.put_many`."""
        if not events:
            return
        # Encoded and signed before taking the lock: the publisher's confirms take it too.
        bodies = [wire.encode(event, self.signer) for event in events]
        with self._lock:
            ids = range(self._next_id, self._next_id + len(events))
            entries = list(map(Entry, ids, events, bodies))
            self._next_id += len(entries)
            self._store(entries)
            self._waiting.extend(entries)
            self._waiting_per_instance.update(event.subject for event in events)
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
            self._waiting_per_instance.update(entry.event.subject for entry in released)
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
            if self._waiting_per_instance[entry.event.subject] > 1:
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
        uuid = entry.event.subject
        self._waiting_per_instance[uuid] -= 1
        if not self._waiting_per_instance[uuid]:
            del self._waiting_per_instance[uuid]

    # Hooks for a durable subclass; called with the lock held.

    def _store(self, entries: list[Entry]) -> None:
        """Persist new entries, together."""

    def _confirmed(self, entries: list[Entry]) -> None:
        """Forget entries the broker confirmed (in order)."""

    def _dropped(self, entries: list[Entry]) -> None:
        """Forget coalesced entries."""
