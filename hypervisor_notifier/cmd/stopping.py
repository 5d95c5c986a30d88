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
