"""What a resync publishes: only the changes the published events did not tell."""

from __future__ import annotations

import datetime
from collections.abc import Callable, Mapping

from hypervisor_notifier.backends.base import InstanceState
from hypervisor_notifier.events import (
    TRANSITION_FOR_STATE,
    LifecycleEvent,
    Observation,
    PowerState,
    Transition,
)

RESYNC_REASON = "RESYNC"
#: The detail of a ``vanished`` guest: the listing no longer shows it.
MISSING_DETAIL = "MISSING"
#: The ``details`` key of a ``vanished`` guest: its last published power state.
LAST_POWER_STATE = "last_power_state"
#: Power states after which a guest missing from a listing is forgotten silently:
#: it was stopped (then undefined: a deletion), or already reported vanished.
_GONE_QUIETLY = (PowerState.SHUTDOWN, PowerState.NOSTATE)


#: instance UUID -> (instance name, last published power state)
States = Mapping[str, tuple[str, PowerState]]


class PublishedStates:
    """The last published power state of each instance.

    Not thread-safe: the service uses it from the backend's thread only
    (``on_events`` and ``on_resync`` are called there).

    Arguments:
        known: The states a previous run published (the durable outbox keeps
            them), so that a restart publishes only what changed meanwhile.
        forget: Called with the UUIDs this forgets, so the keeper forgets them too.

    """

    def __init__(
        self,
        known: States | None = None,
        forget: Callable[[list[str]], None] = lambda _uuids: None,
    ) -> None:
        self._states: dict[str, tuple[str, PowerState]] = dict(known or {})
        self._forget = forget

    def __len__(self) -> int:
        return len(self._states)

    def record(self, event: LifecycleEvent) -> None:
        """Remember the state an event published."""
        self._states[event.instance_uuid] = (event.instance_name, event.power_state)

    def missed(self, listing: list[InstanceState], now: datetime.datetime) -> list[Observation]:
        """Return an observation for each instance whose listed state was not published.

        An instance the listing no longer shows (undefined while running,
        migrated away, gone with a restarted hypervisor's state) is reported
        ``vanished`` once (power state NOSTATE: not on this hypervisor), never
        ``stopped``: nothing says it stopped. One last published stopped, or
        already reported vanished, is forgotten silently.
        """
        missed = []
        listed = set()
        for instance in listing:
            listed.add(instance.instance_uuid)
            known = self._states.get(instance.instance_uuid)
            transition = TRANSITION_FOR_STATE.get(instance.power_state)
            if transition is None or (known and known[1] is instance.power_state):
                continue
            missed.append(
                Observation(
                    instance.instance_uuid,
                    instance.instance_name,
                    transition,
                    instance.power_state,
                    RESYNC_REASON,
                    instance.state,
                    occurred_at=now,
                )
            )
        forgotten = []
        for uuid, (name, power_state) in list(self._states.items()):
            if uuid in listed:
                continue
            if power_state in _GONE_QUIETLY:
                del self._states[uuid]
                forgotten.append(uuid)
                continue
            missed.append(
                Observation(
                    uuid,
                    name,
                    Transition.VANISHED,
                    PowerState.NOSTATE,
                    RESYNC_REASON,
                    MISSING_DETAIL,
                    occurred_at=now,
                    details={LAST_POWER_STATE: int(power_state)},
                )
            )
        if forgotten:
            self._forget(forgotten)
        return missed
