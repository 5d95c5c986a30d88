"""What the service stamps on every event: per-host sequence numbers and event ids.

Both are issued for a whole group at once (:meth:`Service._emit_many`): the
randomness of a group's event ids is read in one call, not one system call
per event, each of which lets another thread take the interpreter mid-burst.
"""

from __future__ import annotations

import os
import threading
import time


class SequenceCounter:
    """Per-host event sequence numbers: strictly increasing, also across restarts.

    A number is one more than the previous one, or the wall clock in
    microseconds if that is larger (so a new outbox, with nothing recorded,
    still starts above what an earlier one issued, unless the clock was
    stepped back as well). The first is above ``start``: the highest number
    the previous run issued, recorded in the outbox. A clock stepped back, or
    a run with the clock ahead, therefore never makes the numbers go back.

    Arguments:
        start: The highest number already issued (``Outbox.last_seq``).

    """

    def __init__(self, start: int = 0) -> None:
        self._last = start
        self._lock = threading.Lock()

    def next(self) -> int:
        """Return the next sequence number."""
        return self.take(1).start

    def take(self, count: int) -> range:
        """Return the next ``count`` sequence numbers, consecutive."""
        with self._lock:
            first = max(self._last + 1, time.time_ns() // 1000)
            self._last = first + count - 1
        return range(first, first + count)


def new_event_ids(count: int) -> list[str]:
    """``count`` random (version 4) UUIDs as strings, from one read of the system's randomness.

    Formatted from the hex digits directly (``uuid.UUID`` costs several times
    more per id): the version nibble set to 4, the variant's two bits to 10.
    """
    digits = os.urandom(16 * count).hex()
    return [
        f"{x[:8]}-{x[8:12]}-4{x[13:16]}-{_VARIANT[x[16]]}{x[17:20]}-{x[20:32]}"
        for x in (digits[start : start + 32] for start in range(0, 32 * count, 32))
    ]


#: The variant nibble for a random one: its two high bits 10 (RFC 4122), the other two kept.
_VARIANT = {digit: "89ab"[int(digit, 16) & 3] for digit in "0123456789abcdef"}
