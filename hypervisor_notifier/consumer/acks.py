"""Acknowledging handled messages in groups: one ``basic.ack`` with ``multiple`` for many.

A consumer that acks each message writes a frame per message; a burst of
thousands then costs as many writes. The Subscriber instead acks a handled
message's tag later, covering every earlier handled one, when
:data:`AckBatch.size` are waiting, when the loop is about to wait for the
network, or before any reject or redelivery (so ``multiple`` never covers a
message that was not handled). An ack is still only ever sent after the
callback returned; a connection lost before the flush makes the broker
redeliver those messages, which the dispatcher then drops as duplicates (or
a state file remembers across a restart).
"""

from __future__ import annotations

import time
from typing import Any


class AckBatch:
    """Handled delivery tags of one channel, acknowledged together.

    Arguments:
        size: Acknowledge once this many are waiting (at most the prefetch, or
            the broker stops sending before the batch fills).
        max_delay: Seconds a handled message may wait for its ack when the
            loop comes round (:meth:`due`).

    """

    def __init__(self, size: int, max_delay: float = 0.05) -> None:
        self.size = max(1, size)
        self.max_delay = max_delay
        self._channel: Any = None
        self._tag = 0
        self._count = 0
        self._since = 0.0

    def handled(self, channel: Any, tag: int) -> None:
        """``tag`` was handled (callback returned, or nothing to do): ack it soon."""
        if self._channel is not channel:
            # Another channel: the old one is gone with its tags (redelivered).
            self.forget()
            self._channel = channel
        self._tag = tag
        if not self._count:
            self._since = time.monotonic()
        self._count += 1
        if self._count >= self.size:
            self.flush()

    @property
    def pending(self) -> int:
        """Handled messages not acknowledged yet."""
        return self._count

    def due(self) -> None:
        """Flush if the oldest waiting ack has waited ``max_delay`` (called each loop turn)."""
        if self._count and time.monotonic() - self._since >= self.max_delay:
            self.flush()

    def flush(self) -> None:
        """Acknowledge every handled tag now (one frame)."""
        if self._count and self._channel is not None:
            self._channel.basic_ack(self._tag, multiple=True)
        self._count = 0

    def forget(self) -> None:
        """The channel is gone: its handled messages will be redelivered."""
        self._count = 0
        self._channel = None
