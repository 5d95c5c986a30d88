"""What the service tells of its hypervisor connection: one ``disconnected`` per outage.

The bus hears of the connection only through host events
(:mod:`hypervisor_notifier.host_events`):

- ``disconnected`` as soon as the connection is lost, or cannot be made at
  start; once per outage, however many connection attempts fail meanwhile
  (and a connection whose resync fails does not end the outage);
- ``connected`` after the resync of a new connection ran, its events
  published before it: with reason ``started`` for the service's first
  connection (so a consumer that saw the previous run's ``disconnected``, or
  that starts watching now, knows guests are watched again), ``reconnected``
  after an outage.

Between the two, every guest's state is unknown: the service publishes
nothing about a guest (the backend skeleton reports nothing before a new
connection's resync).
"""

from __future__ import annotations

import collections
import datetime
import time
from collections.abc import Callable

from hypervisor_notifier.host_events import HostChange, HostObservation

#: ``connected``'s reasons.
STARTED = "started"
RECONNECTED = "reconnected"


class HostConnection:
    """Decide which host events to publish, and remember what was said.

    Called from the backend's thread only (its listener calls).

    Arguments:
        clock: Monotonic seconds (for how long an outage lasted).

    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        #: The last host event published in this run; None before the first.
        self.said: HostChange | None = None
        #: Host events decided, by change (the metric).
        self.published: collections.Counter[str] = collections.Counter()
        self._lost_at: float | None = None

    @property
    def connected(self) -> bool:
        """Whether the bus was told the connection is up (and guests are watched)."""
        return self.said is HostChange.CONNECTED

    def down_seconds(self) -> float:
        """Seconds since ``disconnected`` was said; 0 while connected or before."""
        if self.said is not HostChange.DISCONNECTED or self._lost_at is None:
            return 0.0
        return self._clock() - self._lost_at

    def lost(self, reason: str, now: datetime.datetime) -> HostObservation | None:
        """The connection was lost, or could not be made: ``disconnected``, unless said already.

        Arguments:
            reason: Why, as the backend tells it.
            now: When (aware, UTC).

        """
        if self.said is HostChange.DISCONNECTED:
            return None
        self.said = HostChange.DISCONNECTED
        self._lost_at = self._clock()
        return self._decided(HostObservation(HostChange.DISCONNECTED, reason, occurred_at=now))

    def resynced(
        self, *, listed: int, changed: int, vanished: int, now: datetime.datetime
    ) -> HostObservation | None:
        """A resync ran: ``connected``, unless said already (a periodic resync).

        Arguments:
            listed: Guests the listing showed.
            changed: State changes it published, vanished guests not counted.
            vanished: Guests it reported ``vanished``.
            now: When (aware, UTC).

        """
        if self.said is HostChange.CONNECTED:
            return None
        details: dict[str, int | float] = {
            "listed": listed,
            "changed": changed,
            "vanished": vanished,
        }
        if self._lost_at is not None:
            details["down_seconds"] = round(self._clock() - self._lost_at, 3)
        # The service's first connected in this run is its start.
        reason = RECONNECTED if self.published[HostChange.CONNECTED.value] else STARTED
        self.said, self._lost_at = HostChange.CONNECTED, None
        return self._decided(
            HostObservation(HostChange.CONNECTED, reason, occurred_at=now, details=details)
        )

    def _decided(self, observation: HostObservation) -> HostObservation:
        self.published[observation.change.value] += 1
        return observation
