"""Hold a guest's ``stopped`` briefly unless the guest shut itself down.

nova's libvirt driver holds every STOPPED for 15 s so that the destroy half
of a reboot (destroy, then create) does not make nova stop the instance: the
STARTED that follows cancels it. That hold also delays the one STOPPED nova
most wants at once, a ``shutdown -h now`` inside the guest. The hypervisors
say which is which:

- libvirt reports ``SHUTDOWN``/``GUEST`` (our ``shutting_down`` with detail
  ``GUEST``) right before the ``STOPPED`` of a shutdown the guest asked for;
- vSphere reports ``VmGuestShutdownEvent``, which the ESX backend names as
  the ``stopped`` event's reason.

:class:`StoppedHold` delivers such a ``stopped`` at once and holds any other
for ``hold`` seconds, dropping it when a later event of the same guest
arrives in the meantime.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from hypervisor_notifier.events import LifecycleEvent, Transition

LOG = logging.getLogger(__name__)

#: (transition, detail) of the event announcing that the guest itself shuts down.
GUEST_SHUTDOWN_ANNOUNCEMENTS = frozenset({(Transition.SHUTTING_DOWN, "GUEST")})
#: ``reason`` of a ``stopped`` that the guest's own shutdown caused.
GUEST_SHUTDOWN_REASONS = frozenset({"VmGuestShutdownEvent"})


class StoppedHold:
    """Deliver events in order, holding a non-guest-initiated ``stopped``.

    Delivery semantics:

    - Events of one guest are delivered in the order offered; a held
      ``stopped`` is dropped (counted ``cancelled``) when any later event of
      that guest is offered before its hold ends.
    - A ``stopped`` is delivered at once when the guest's previous event
      announced a guest-initiated shutdown, when its reason says so, or when
      ``hold`` is 0.
    - Deliveries never overlap: one lock serializes them, so the application
      sees one event at a time, from whichever thread (the offering thread or
      the hold's timer thread) delivers it.
    - Held events live in memory only: if the process ends during a hold,
      the application's own periodic check is the safety net.

    Arguments:
        deliver: Called with each event that is delivered.
        hold: Seconds a ``stopped`` that may be half of a reboot is held.
        clock: Monotonic clock in seconds (a test hook).

    """

    def __init__(
        self,
        deliver: Callable[[LifecycleEvent], None],
        hold: float = 15.0,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.deliver = deliver
        self.hold = hold
        self.clock = clock
        self.delivered_at_once = 0
        self.held = 0
        self.cancelled = 0
        self._lock = threading.Condition()
        self._held: dict[str, tuple[float, LifecycleEvent]] = {}
        self._announced: set[str] = set()
        self._stopping = False
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Release held events when their hold ends, from a background thread."""
        self._thread = threading.Thread(target=self._run, name="stopped-hold", daemon=True)
        self._thread.start()

    def stop(self) -> list[LifecycleEvent]:
        """Stop the timer thread; return the events still held (not delivered)."""
        with self._lock:
            self._stopping = True
            self._lock.notify_all()
            left = [event for _, event in self._held.values()]
            self._held.clear()
        if self._thread is not None:
            self._thread.join()
        return left

    def offer(self, event: LifecycleEvent) -> None:
        """Deliver ``event`` now, or hold it if it is a ``stopped`` that may be a reboot's."""
        with self._lock:
            if self._held.pop(event.instance_uuid, None) is not None:
                self.cancelled += 1
                LOG.info(
                    "held stopped of %s cancelled by %s",
                    event.instance_uuid,
                    event.transition.value,
                )
            announced = event.instance_uuid in self._announced
            self._announced.discard(event.instance_uuid)
            if (event.transition, event.detail) in GUEST_SHUTDOWN_ANNOUNCEMENTS:
                self._announced.add(event.instance_uuid)
            if (
                event.transition is Transition.STOPPED
                and self.hold > 0
                and not (announced or event.reason in GUEST_SHUTDOWN_REASONS)
            ):
                self.held += 1
                self._held[event.instance_uuid] = (self.clock() + self.hold, event)
                self._lock.notify_all()
                return
            if event.transition is Transition.STOPPED:
                self.delivered_at_once += 1
            self.deliver(event)

    def release_due(self) -> float | None:
        """Deliver the held events whose hold has ended; return seconds to the next end."""
        with self._lock:
            now = self.clock()
            for uuid, (due, event) in sorted(self._held.items(), key=lambda item: item[1][0]):
                if due > now:
                    return due - now
                del self._held[uuid]
                self.deliver(event)
            return None

    def _run(self) -> None:
        with self._lock:
            while not self._stopping:
                try:
                    wait = self.release_due()
                except Exception:  # the application's failure must not end the timer
                    LOG.exception("delivering a held stopped event failed")
                    wait = None
                self._lock.wait(wait)
