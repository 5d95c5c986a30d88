"""StoppedHold: a guest's own shutdown reaches the application at once, a reboot's stop never."""

from __future__ import annotations

import threading

import pytest

from hypervisor_notifier.consumer.stopped_hold import StoppedHold
from hypervisor_notifier.events import LifecycleEvent, PowerState, Transition
from tests.factories import make_event


class ManualClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def delivered() -> list[LifecycleEvent]:
    return []


@pytest.fixture
def hold(clock: ManualClock, delivered: list[LifecycleEvent]) -> StoppedHold:
    return StoppedHold(delivered.append, 15.0, clock=clock)


UUID = "6c1b1a53-7a3e-4c57-9d5e-0d6f3c6d1f11"


def guest_shutdown() -> list[LifecycleEvent]:
    """libvirt's events for ``shutdown -h now`` inside the guest."""
    return [
        make_event(
            instance_uuid=UUID,
            transition=Transition.SHUTTING_DOWN,
            power_state=PowerState.RUNNING,
            reason="SHUTDOWN",
            detail="GUEST",
            seq=1,
        ),
        make_event(
            instance_uuid=UUID,
            transition=Transition.STOPPED,
            reason="STOPPED",
            detail="SHUTDOWN",
            seq=2,
        ),
    ]


def test_guest_initiated_shutdown_is_delivered_at_once(hold, delivered):
    events = guest_shutdown()
    for event in events:
        hold.offer(event)

    assert delivered == events
    assert (hold.delivered_at_once, hold.held) == (1, 0)


def test_vsphere_guest_shutdown_reason_is_delivered_at_once(hold, delivered):
    stopped = make_event(hypervisor="esx", reason="VmGuestShutdownEvent", detail="poweredOff")

    hold.offer(stopped)

    assert delivered == [stopped]


def test_stop_of_a_reboot_is_held_then_cancelled_by_the_start(hold, delivered, clock):
    stopped = make_event(instance_uuid=UUID, reason="STOPPED", detail="DESTROYED", seq=1)
    started = make_event(
        instance_uuid=UUID,
        transition=Transition.STARTED,
        power_state=PowerState.RUNNING,
        reason="STARTED",
        detail="BOOTED",
        seq=2,
    )

    hold.offer(stopped)
    clock.now += 14.9
    assert hold.release_due() == pytest.approx(0.1)
    hold.offer(started)
    clock.now += 60
    hold.release_due()

    assert delivered == [started]
    assert (hold.held, hold.cancelled) == (1, 1)


def test_held_stop_is_delivered_when_the_hold_ends(hold, delivered, clock):
    stopped = make_event(reason="STOPPED", detail="DESTROYED")

    hold.offer(stopped)
    assert delivered == []
    clock.now += 15
    assert hold.release_due() is None

    assert delivered == [stopped]


def test_a_guest_announcement_only_covers_the_next_event(hold, delivered):
    """A guest shutdown, a start, then a host destroy: that destroy is held."""
    first = guest_shutdown()
    started = make_event(
        instance_uuid=UUID, transition=Transition.STARTED, power_state=PowerState.RUNNING, seq=3
    )
    destroyed = make_event(instance_uuid=UUID, reason="STOPPED", detail="DESTROYED", seq=4)

    for event in [*first, started, destroyed]:
        hold.offer(event)

    assert delivered == [*first, started]


def test_announcement_of_another_guest_does_not_release(hold, delivered):
    announce, _ = guest_shutdown()
    other_stopped = make_event(detail="DESTROYED")

    hold.offer(announce)
    hold.offer(other_stopped)

    assert delivered == [announce]


def test_host_requested_shutdown_is_held(hold, delivered):
    """SHUTDOWN/HOST (e.g. a signal to qemu) is no guest decision: held like nova does."""
    hold.offer(make_event(instance_uuid=UUID, transition=Transition.SHUTTING_DOWN, detail="HOST"))
    hold.offer(make_event(instance_uuid=UUID, detail="SHUTDOWN"))

    assert [event.transition for event in delivered] == [Transition.SHUTTING_DOWN]


def test_zero_hold_delivers_everything_at_once(clock, delivered):
    hold = StoppedHold(delivered.append, 0, clock=clock)
    stopped = make_event(detail="DESTROYED")

    hold.offer(stopped)

    assert delivered == [stopped]


def test_other_transitions_are_never_held(hold, delivered):
    events = [
        make_event(transition=t, detail="X") for t in Transition if t is not Transition.STOPPED
    ]

    for event in events:
        hold.offer(event)

    assert delivered == events


def test_timer_thread_releases_held_events_and_stop_returns_the_rest(delivered):
    released = threading.Event()
    hold = StoppedHold(lambda event: (delivered.append(event), released.set()), 0.05)
    first = make_event(detail="DESTROYED")
    hold.start()
    hold.offer(first)
    assert released.wait(10)
    hold.hold = 3600.0
    second = make_event(detail="DESTROYED")
    hold.offer(second)

    assert hold.stop() == [second]
    assert delivered == [first]


def test_failing_delivery_does_not_end_the_timer(delivered):
    calls = threading.Semaphore(0)

    def deliver(event: LifecycleEvent) -> None:
        calls.release()
        if event.detail == "FAIL":
            raise RuntimeError("nova is unhappy")
        delivered.append(event)

    hold = StoppedHold(deliver, 0.01)
    hold.start()
    hold.offer(make_event(detail="FAIL"))
    assert calls.acquire(timeout=10)
    ok = make_event(detail="DESTROYED")
    hold.offer(ok)
    assert calls.acquire(timeout=10)
    hold.stop()

    assert delivered == [ok]
