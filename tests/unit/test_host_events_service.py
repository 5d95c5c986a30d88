"""The service's host events: one disconnected per outage, connected after the resync's events.

The service is driven as the backend skeleton drives it (its listener calls,
from one thread); what it published is read back from its outbox, in order.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from hypervisor_notifier.backends.base import BackendUnavailable, InstanceState
from hypervisor_notifier.events import LifecycleEvent, Observation, PowerState, Transition, utcnow
from hypervisor_notifier.host_events import HostChange, HostEvent
from hypervisor_notifier.notifier.outbox import MemoryOutbox
from hypervisor_notifier.notifier.service import Service
from hypervisor_notifier.wire import WireEvent


class Hypervisor:
    """What the service asks of a backend: its name and a listing, which may fail."""

    name = "libvirt"

    def __init__(self) -> None:
        self.guests: dict[str, PowerState] = {}
        self.unavailable = False

    def list_instances(self) -> list[InstanceState]:
        if self.unavailable:
            raise BackendUnavailable("listing domains failed: end of file")
        return [
            InstanceState(uuid, f"vm-{uuid[:4]}", state, state.name)
            for uuid, state in self.guests.items()
        ]


@pytest.fixture
def service() -> Iterator[Service]:
    outbox = MemoryOutbox()
    yield Service(Hypervisor(), outbox, publisher=None, host="compute1")  # type: ignore[arg-type]
    outbox.close()


def published(service: Service) -> list[WireEvent]:
    """What the service put in its outbox since the last call, in order."""
    return [entry.event for entry in service.outbox.take(10_000)]


def kinds(events: list[WireEvent]) -> list[str]:
    """``host <change>`` or ``<transition>`` (``resync`` marked) for each event."""
    return [
        f"host {e.change.value}"
        if isinstance(e, HostEvent)
        else e.transition.value + (" (resync)" if e.resync else "")
        for e in events
    ]


def running(service: Service, count: int) -> list[str]:
    hypervisor = service.backend
    uuids = [str(uuid.uuid4()) for _ in range(count)]
    hypervisor.guests.update(dict.fromkeys(uuids, PowerState.RUNNING))  # type: ignore[attr-defined]
    return uuids


def test_the_first_connection_publishes_its_resync_then_connected_started(service):
    running(service, 2)

    service.on_resync("connected")

    events = published(service)
    assert kinds(events) == ["started (resync)", "started (resync)", "host connected"]
    connected = events[-1]
    assert (connected.reason, dict(connected.details)) == (
        "started", {"listed": 2, "changed": 2, "vanished": 0},
    )  # fmt: skip
    assert connected.subject == "" and connected.seq > events[1].seq
    assert service.host_connection.published == {"connected": 1}


def test_an_outage_is_one_disconnected_however_many_attempts_fail(service):
    running(service, 1)
    service.on_resync("connected")
    published(service)

    service.on_disconnected("end of file")
    for _ in range(5):  # the attempts that fail while it is down
        service.on_disconnected("cannot connect to libvirt: Connection refused")

    (disconnected,) = published(service)
    assert (disconnected.change, disconnected.reason) == (HostChange.DISCONNECTED, "end of file")
    assert service.host_connection.down_seconds() >= 0
    assert not service.host_connection.connected


def test_after_reconnecting_the_resync_comes_first_and_connected_says_what_it_found(service):
    gone, paused, same = running(service, 3)
    service.on_resync("connected")
    service.on_disconnected("keepalive timeout")
    published(service)
    hypervisor = service.backend
    del hypervisor.guests[gone]  # type: ignore[attr-defined]
    hypervisor.guests[paused] = PowerState.PAUSED  # type: ignore[attr-defined]

    service.on_resync("connected")

    events = published(service)
    # The guest missing from the listing vanished: it is not reported stopped.
    assert sorted(kinds(events[:-1])) == ["paused (resync)", "vanished (resync)"]
    assert all(e.transition is not Transition.STOPPED for e in events[:-1])
    assert {e.instance_uuid for e in events[:-1]} == {gone, paused}
    assert same not in {e.subject for e in events}
    connected = events[-1]
    assert (connected.change, connected.reason) == (HostChange.CONNECTED, "reconnected")
    details = dict(connected.details)
    assert details.pop("down_seconds") >= 0
    assert details == {"listed": 2, "changed": 1, "vanished": 1}
    assert service.host_connection.down_seconds() == 0


def test_an_unreachable_hypervisor_at_start_is_disconnected_once_then_connected_started(service):
    for _ in range(3):
        service.on_disconnected("cannot connect to libvirt qemu:///system: No such file")
    running(service, 1)
    service.on_resync("connected")

    events = published(service)
    assert kinds(events) == ["host disconnected", "started (resync)", "host connected"]
    assert events[0].reason.startswith("cannot connect to libvirt")
    assert events[-1].reason == "started" and "down_seconds" in events[-1].details


def test_a_resync_that_fails_publishes_nothing_and_the_outage_goes_on(service):
    running(service, 1)
    service.on_resync("connected")
    service.on_disconnected("end of file")
    published(service)

    service.backend.unavailable = True  # type: ignore[attr-defined]
    with pytest.raises(BackendUnavailable):
        service.on_resync("connected")
    service.on_disconnected("resync failed: listing domains failed: end of file")

    assert published(service) == []
    assert not service.host_connection.connected
    service.backend.unavailable = False  # type: ignore[attr-defined]
    service.on_resync("connected")
    assert kinds(published(service)) == ["host connected"]


def test_a_periodic_resync_while_connected_publishes_no_host_event(service):
    running(service, 1)
    service.on_resync("connected")
    published(service)

    service.on_resync("periodic")

    assert published(service) == []


class HostEventsMachine(RuleBasedStateMachine):
    """The service under any sequence of the skeleton's calls, against the contract.

    The skeleton reports events only on a resynced connection, and announces
    lost connections and failed attempts in any number (the service keeps
    one per outage).
    """

    def __init__(self) -> None:
        super().__init__()
        self.hypervisor = Hypervisor()
        self.outbox = MemoryOutbox()
        self.service = Service(self.hypervisor, self.outbox, publisher=None, host="h")  # type: ignore[arg-type]
        self.events: list[WireEvent] = []
        #: Whether the skeleton serves a resynced connection (events may be pushed).
        self.serving = False

    def teardown(self) -> None:
        self.outbox.close()

    @rule(count=st.integers(0, 2))
    def guests_start(self, count: int) -> None:
        running(self.service, count)

    @rule(data=st.data())
    def a_guest_changes_or_goes(self, data: st.DataObject) -> None:
        if self.hypervisor.guests:
            guest = data.draw(st.sampled_from(sorted(self.hypervisor.guests)))
            state = data.draw(st.sampled_from([None, PowerState.PAUSED, PowerState.SHUTDOWN]))
            if state is None:
                del self.hypervisor.guests[guest]
            else:
                self.hypervisor.guests[guest] = state

    @rule(reason=st.sampled_from(["end of file", "cannot connect", "keepalive timeout"]))
    def lost_or_attempt_failed(self, reason: str) -> None:
        self.serving = False
        self.service.on_disconnected(reason)

    @rule(fails=st.booleans())
    def connected(self, fails: bool) -> None:
        self.hypervisor.unavailable = fails
        try:
            self.service.on_resync("connected")
        except BackendUnavailable:
            self.serving = False  # the skeleton takes the connection as lost
            self.service.on_disconnected("resync failed")
        else:
            self.serving = True

    @precondition(lambda self: self.serving)
    @rule()
    def pushed(self) -> None:
        for guest in list(self.hypervisor.guests)[:1]:
            rebooted = Observation(guest, "vm", Transition.REBOOTED, PowerState.RUNNING,
                                   "REBOOT", "", occurred_at=utcnow())  # fmt: skip
            self.service.on_events([rebooted])

    @invariant()
    def host_events_alternate_and_no_guest_is_published_while_unknown(self) -> None:
        self.events += [entry.event for entry in self.outbox.take(10_000)]
        said = "nothing"
        pending_resync: list[LifecycleEvent] = []
        for event in self.events:
            if isinstance(event, HostEvent):
                assert event.change.value != said, f"two {said} in a row"
                said = event.change.value
                if event.change is HostChange.CONNECTED:
                    # Its details count the resync events just before it.
                    vanished = sum(e.transition is Transition.VANISHED for e in pending_resync)
                    assert event.details["vanished"] == vanished
                    assert event.details["changed"] == len(pending_resync) - vanished
                pending_resync = []
            elif said != "connected":
                # While disconnected (or before the first connected): resync events only,
                # and no stop for a guest the listing lost.
                assert event.resync, event
                assert event.transition is not Transition.STOPPED or event.detail != "MISSING"
                pending_resync.append(event)
        assert (said == "connected") == self.service.host_connection.connected


HostEventsMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=30,
                                               deadline=None)  # fmt: skip
test_host_events_follow_the_connection_whatever_the_sequence = HostEventsMachine.TestCase
