"""Exponential backoff with jitter, for reconnecting to brokers and hypervisors."""

from __future__ import annotations

import random


class Backoff:
    """Delays that double from ``initial`` up to ``maximum``, each with jitter.

    Jitter spreads the reconnects of many hosts after a shared outage (a
    broker restart) so they do not all arrive in the same instant.

    Arguments:
        initial: The first delay, in seconds.
        maximum: The largest delay, in seconds.
        jitter: Each delay is drawn from ``[d * (1 - jitter), d]``.

    """

    def __init__(self, initial: float = 0.5, maximum: float = 30.0, jitter: float = 0.25) -> None:
        self.initial = initial
        self.maximum = maximum
        self.jitter = jitter
        self._current = initial

    def next(self) -> float:
        """Return the next delay and double the one after it."""
        delay = self._current
        self._current = min(self._current * 2, self.maximum)
        return delay * (1 - random.uniform(0, self.jitter))

    def reset(self) -> None:
        """Start again from ``initial`` (after a success)."""
        self._current = self.initial
