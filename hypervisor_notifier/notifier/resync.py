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
#: The detail of a ``stopped`` for a reported guest that no listing shows any more.
MISSING_DETAIL = "MISSING"


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

        An instance the listing no longer shows (destroyed while it was not
        listed as running, undefined, migrated away) is reported stopped once,
        unless it was last published stopped; then it is forgotten.
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
                    now,
                )
            )
        forgotten = []
        for uuid, (name, power_state) in list(self._states.items()):
            if uuid in listed:
                continue
            if power_state is PowerState.SHUTDOWN:
                del self._states[uuid]
                forgotten.append(uuid)
                continue
            missed.append(
                Observation(
                    uuid,
                    name,
                    Transition.STOPPED,
                    PowerState.SHUTDOWN,
                    RESYNC_REASON,
                    MISSING_DETAIL,
                    now,
                )
            )
        if forgotten:
            self._forget(forgotten)
        return missed
