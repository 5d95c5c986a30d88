"""SIGTERM and SIGINT for a process of several threads."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Callable, Iterator

STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}


@contextlib.contextmanager
def stop_signals_to_main_thread(on_stop: Callable[[], None]) -> Iterator[None]:
    """Start threads inside this block: SIGTERM and SIGINT then reach only the main thread.

    Python runs signal handlers in the main thread only, and a wait there is
    not woken by a signal the kernel delivered to another thread: such a
    SIGTERM would go unnoticed. Threads started inside the block inherit a
    mask that blocks the stop signals, so the kernel delivers them to the
    main thread, whose handler calls ``on_stop``.
    """
    for signum in STOP_SIGNALS:
        signal.signal(signum, lambda _signum, _frame: on_stop())
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)


class StopRequest:
    """A stop signal that may arrive before what it must stop exists.

    The signal handler calls :meth:`request`; once the thing to stop is
    built, :meth:`forward_to` names it (and stops it at once if a signal
    already came).
    """

    def __init__(self) -> None:
        self._target: Callable[[], None] | None = None
        self._requested = False

    def request(self) -> None:
        """Stop what was named, or remember to."""
        self._requested = True
        if self._target is not None:
            self._target()

    def forward_to(self, target: Callable[[], None]) -> None:
        """From now on a request calls ``target``."""
        self._target = target
        if self._requested:
            target()
