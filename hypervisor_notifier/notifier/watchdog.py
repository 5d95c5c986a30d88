"""systemd's watchdog, pinged only while the service really works.

The main thread pings ``WATCHDOG=1`` every half ``WATCHDOG_USEC`` (so a main
loop that stops stops the pings), and only while:

- the publisher thread is alive;
- the backend's threads are alive (:meth:`Backend.alive`);
- the backend's dispatch thread is not stuck in a listener call (reporting
  events or resyncing) for longer than the watchdog period: it is watched
  through :meth:`Watchdog.listener`, which times every call.

A ping withheld is logged at ERROR with the reason; systemd then kills and
restarts the service (``Restart=on-failure``), and the outbox keeps what was
accepted.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from hypervisor_notifier.notifier import systemd
from hypervisor_notifier.notifier.service import Service

LOG = logging.getLogger(__name__)


class _TimedListener:
    """Forwards every call to the service, noting which call runs since when."""

    def __init__(self, target: Any, watchdog: Watchdog) -> None:
        self._target = target
        self._watchdog = watchdog

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._target, name)
        if not callable(attribute):
            return attribute

        @functools.wraps(attribute)
        def timed(*args: Any, **kwargs: Any) -> Any:
            self._watchdog.busy = (name, time.monotonic())
            try:
                return attribute(*args, **kwargs)
            finally:
                self._watchdog.busy = None

        return timed


class Watchdog:
    """Decide whether the service is alive; ping systemd while it is.

    Arguments:
        service: The service, not yet started (its backend is watched through
            :meth:`listener`).
        interval: Seconds between pings (half of ``WATCHDOG_USEC``); a
            listener call running longer than twice this is a stuck thread.

    """

    def __init__(self, service: Service, interval: float) -> None:
        self.service = service
        self.interval = interval
        #: The listener call running now, and since when (monotonic).
        self.busy: tuple[str, float] | None = None
        service.listener = self.listener(service.listener)

    def listener(self, target: Any) -> Any:
        """``target`` (a backend listener), its calls timed."""
        return _TimedListener(target, self)

    def problem(self) -> str | None:
        """Why the service is not alive (None when it is)."""
        if not self.service.publisher.alive:
            return "the publisher thread is not running"
        if not self.service.backend.alive():
            return f"the {self.service.backend.name} backend's thread is not running"
        busy = self.busy
        if busy is not None:
            stuck_for = time.monotonic() - busy[1]
            if stuck_for > 2 * self.interval:
                return (
                    f"the {self.service.backend.name} backend's dispatch thread has been "
                    f"stuck in {busy[0]} for {stuck_for:.0f} s"
                )
        return None

    def run(self, stop: threading.Event | Callable[[float], bool]) -> None:
        """Ping every ``interval`` while alive, until ``stop`` (Event or wait function) is set."""
        wait = stop.wait if isinstance(stop, threading.Event) else stop
        while not wait(self.interval):
            problem = self.problem()
            if problem is None:
                systemd.notify("WATCHDOG=1")
            else:
                LOG.error("%s: systemd watchdog not pinged, systemd restarts the service", problem)
