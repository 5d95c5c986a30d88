"""The outbox: events waiting for the broker's confirm, in order.

The service puts each event in the outbox; the publisher takes entries to
publish and confirms them once the broker acked them. An entry leaves the
outbox only on :meth:`Outbox.confirm`, so a broker outage loses nothing:
after a reconnect the publisher releases what was in flight and sends it
again, in the original order.

Threading contract: ``put`` may be called from any one thread; ``take``,
``confirm`` and ``release_inflight`` from the publisher thread only.
"""

from __future__ import annotations

import abc
import collections
import contextlib
import dataclasses
import os
import threading

from hypervisor_notifier import wire
from hypervisor_notifier.events import LifecycleEvent


@dataclasses.dataclass(frozen=True)
class Entry:
    """An event in the outbox.

    Arguments:
        entry_id: Position in the outbox; larger is later.
        event: The event.
        body: Its encoded notification body, ready to publish.

    """

    entry_id: int
    event: LifecycleEvent
    body: bytes


class Outbox(abc.ABC):
    """Ordered events awaiting confirmation, with a file descriptor to wait on.

    ``wake_fd`` becomes readable when an entry is put; the publisher waits on
    it (together with its broker socket) in ``select`` instead of polling.
    """

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
        with contextlib.suppress(BlockingIOError):
            os.read(self._wake_r, 64)
        # Cleared after the read: a put that saw the flag still set has
        # already appended its entry, which the following take returns.
        self._signalled = False

    def close(self) -> None:
        """Release the wake descriptors."""
        os.close(self._wake_r)
        os.close(self._wake_w)

    @abc.abstractmethod
    def put(self, event: LifecycleEvent) -> None:
        """Append an event; it stays until confirmed."""

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
    def __len__(self) -> int:
        """Number of entries not yet confirmed (waiting or in flight)."""


class MemoryOutbox(Outbox):
    """An outbox in memory: survives broker outages, not a restart of the service."""

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._waiting: collections.deque[Entry] = collections.deque()
        self._inflight: dict[int, Entry] = {}
        self._next_id = 1

    def put(self, event: LifecycleEvent) -> None:
        """See :meth:`Outbox.put`."""
        body = wire.encode(event)
        with self._lock:
            self._waiting.append(Entry(self._next_id, event, body))
            self._next_id += 1
        self.wake()

    def take(self, limit: int) -> list[Entry]:
        """See :meth:`Outbox.take`."""
        with self._lock:
            count = min(limit, len(self._waiting))
            taken = [self._waiting.popleft() for _ in range(count)]
            for entry in taken:
                self._inflight[entry.entry_id] = entry
        return taken

    def confirm(self, entries: list[Entry]) -> None:
        """See :meth:`Outbox.confirm`."""
        with self._lock:
            for entry in entries:
                self._inflight.pop(entry.entry_id, None)

    def release_inflight(self) -> None:
        """See :meth:`Outbox.release_inflight`."""
        with self._lock:
            released = sorted(self._inflight.values(), key=lambda entry: entry.entry_id)
            self._inflight.clear()
            self._waiting.extendleft(reversed(released))
        if released:
            self.wake()

    def __len__(self) -> int:
        with self._lock:
            return len(self._waiting) + len(self._inflight)
