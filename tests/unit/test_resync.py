"""PublishedStates.missed: a resync reports only what the published events did not tell."""

from __future__ import annotations

import datetime
import uuid

import pytest

from hypervisor_notifier.backends.base import InstanceState
from hypervisor_notifier.events import LifecycleEvent, Observation, PowerState, Transition
from hypervisor_notifier.notifier.resync import PublishedStates
from tests.factories import make_event

NOW = datetime.datetime(2024, 2, 29, 12, 0, tzinfo=datetime.timezone.utc)

#: power state -> (libvirt's raw state name in a listing, the transition a resync reports)
RESYNC_TRANSITIONS = {
    PowerState.RUNNING: ("RUNNING", Transition.STARTED),
    PowerState.PAUSED: ("PAUSED", Transition.PAUSED),
    PowerState.SHUTDOWN: ("SHUTOFF", Transition.STOPPED),
    PowerState.SUSPENDED: ("PMSUSPENDED", Transition.SUSPENDED),
    PowerState.CRASHED: ("CRASHED", Transition.CRASHED),
}
NOT_STOPPED = [state for state in RESYNC_TRANSITIONS if state is not PowerState.SHUTDOWN]


def listed(power_state: PowerState, instance_uuid: str | None = None) -> InstanceState:
    """One instance as a listing shows it, with libvirt's raw name of its state."""
    raw = RESYNC_TRANSITIONS.get(power_state, ("NOSTATE",))[0]
    return InstanceState(instance_uuid or str(uuid.uuid4()), "instance-0000002a", power_state, raw)


def resync(published: PublishedStates, listing: list[InstanceState]) -> list[Observation]:
    """What the service does on a resync: report the missed changes, then record them published."""
    missed = published.missed(listing, NOW)
    for seq, observation in enumerate(missed):
        published.record(
            LifecycleEvent.from_observation(
                observation, host="compute1", hypervisor="libvirt", seq=seq, resync=True
            )
        )
    return missed


def expected(
    instance_uuid: str, transition: Transition, power_state: PowerState, detail: str
) -> Observation:
    """The observation a resync should make: reason RESYNC, at the resync's time."""
    return Observation(
        instance_uuid, "instance-0000002a", transition, power_state, "RESYNC", detail,
        occurred_at=NOW,
    )  # fmt: skip


def test_the_first_resync_reports_every_listed_instance_but_those_without_state():
    listing = [listed(state) for state in PowerState]

    missed = resync(PublishedStates(), listing)

    assert sorted(missed, key=str) == sorted(
        (
            expected(i.instance_uuid, RESYNC_TRANSITIONS[i.power_state][1], i.power_state, i.state)
            for i in listing
            if i.power_state is not PowerState.NOSTATE
        ),
        key=str,
    )


def test_a_resync_of_unchanged_states_reports_nothing():
    published = PublishedStates()
    listing = [listed(state) for state in PowerState]
    resync(published, listing)

    assert resync(published, listing) == []
    assert resync(published, listing) == []


@pytest.mark.parametrize("power_state", list(RESYNC_TRANSITIONS), ids=lambda s: s.name)
def test_a_changed_state_is_reported_once_with_its_resync_transition(power_state):
    published = PublishedStates()
    before = PowerState.SHUTDOWN if power_state is PowerState.RUNNING else PowerState.RUNNING
    instance = listed(before)
    resync(published, [instance])
    now = listed(power_state, instance.instance_uuid)

    raw, transition = RESYNC_TRANSITIONS[power_state]
    assert resync(published, [now]) == [
        expected(instance.instance_uuid, transition, power_state, raw)
    ]
    assert resync(published, [now]) == []


@pytest.mark.parametrize("last_published", NOT_STOPPED, ids=lambda s: s.name)
def test_a_vanished_instance_is_reported_vanished_never_stopped_once_then_forgotten(
    last_published,
):
    published = PublishedStates()
    instance = listed(last_published)
    resync(published, [instance])

    (vanished,) = resync(published, [])

    # Not a stop: nothing says it stopped; where it is and whether it runs is unknown.
    assert vanished == Observation(
        instance.instance_uuid, "instance-0000002a", Transition.VANISHED, PowerState.NOSTATE,
        "RESYNC", "MISSING", occurred_at=NOW, details={"last_power_state": int(last_published)},
    )  # fmt: skip
    assert resync(published, []) == []
    assert len(published) == 0


def test_a_vanished_instance_that_comes_back_is_reported_as_it_is_listed():
    published = PublishedStates()
    instance = listed(PowerState.RUNNING)
    resync(published, [instance])
    resync(published, [])  # vanished

    assert [o.transition for o in resync(published, [instance])] == [Transition.STARTED]


def test_an_instance_known_vanished_from_a_previous_run_is_forgotten_silently():
    gone = listed(PowerState.RUNNING)
    forgotten: list[list[str]] = []
    published = PublishedStates(
        {gone.instance_uuid: (gone.instance_name, PowerState.NOSTATE)}, forgotten.append
    )

    assert resync(published, []) == []
    assert forgotten == [[gone.instance_uuid]]


def test_a_vanished_instance_last_published_stopped_is_forgotten_silently():
    published = PublishedStates()
    instance = listed(PowerState.SHUTDOWN)
    resync(published, [instance])

    assert resync(published, []) == []
    assert len(published) == 0
    # Forgotten: should it come back, it is new again.
    assert [o.transition for o in resync(published, [instance])] == [Transition.STOPPED]


def test_a_state_published_by_a_live_event_is_not_reported_again():
    published = PublishedStates()
    event = make_event(transition=Transition.PAUSED, power_state=PowerState.PAUSED)
    published.record(event)

    assert resync(published, [listed(PowerState.PAUSED, event.instance_uuid)]) == []


def test_a_live_event_older_than_the_listed_state_does_not_hide_the_change():
    published = PublishedStates()
    event = make_event(transition=Transition.STARTED, power_state=PowerState.RUNNING)
    published.record(event)

    missed = resync(published, [listed(PowerState.PAUSED, event.instance_uuid)])

    assert [(o.instance_uuid, o.transition, o.detail) for o in missed] == [
        (event.instance_uuid, Transition.PAUSED, "PAUSED")
    ]


def test_a_live_stop_event_makes_a_vanished_instance_forgotten_silently():
    published = PublishedStates()
    running = listed(PowerState.RUNNING)
    resync(published, [running])
    published.record(
        make_event(
            instance_uuid=running.instance_uuid,
            transition=Transition.STOPPED,
            power_state=PowerState.SHUTDOWN,
        )
    )

    assert resync(published, []) == []
    assert len(published) == 0


def test_states_known_from_a_previous_run_are_not_reported_again():
    running = listed(PowerState.RUNNING)
    known = {running.instance_uuid: (running.instance_name, PowerState.RUNNING)}
    published = PublishedStates(known)

    assert resync(published, [running]) == []


def test_forgotten_instances_are_handed_to_the_keeper():
    gone = listed(PowerState.SHUTDOWN)
    forgotten: list[list[str]] = []
    published = PublishedStates(
        {gone.instance_uuid: (gone.instance_name, PowerState.SHUTDOWN)}, forgotten.append
    )

    assert resync(published, []) == []
    assert forgotten == [[gone.instance_uuid]]
