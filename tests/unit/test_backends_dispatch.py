"""The backend skeleton (DispatchingBackend): fake hypervisor queue items, a recording listener.

What both backends inherit: every event waiting is reported in one call, in
order, control items after the events queued before them; a failing listener
is logged and skipped on the same connection; reconnection with backoff,
counted, followed by a resync.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import threading
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from oslo_config import cfg

from hypervisor_notifier.backends import base, dispatch
from hypervisor_notifier.backoff import Backoff
from hypervisor_notifier.events import Observation, PowerState, Transition

TIMEOUT = 10.0
OCCURRED = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)


@dataclasses.dataclass(frozen=True)
class FakeEvent(dispatch.HypervisorEvent):
    """A fake hypervisor's raw event: a guest name; ``reported`` False for one not reported."""

    name: str
    reported: bool = True


class FakeBackend(dispatch.DispatchingBackend):
    """A hypervisor whose connections succeed unless ``failures`` says otherwise."""

    name = "fake"

    def __init__(self, failures: int = 0) -> None:
        super().__init__(cfg.ConfigOpts(), reconnect_interval_max=0.01)
        self._backoff = Backoff(initial=0.01, maximum=0.01)
        self.failures = failures
        self.opened = 0
        self.released = 0
        self.poll_error: Exception | None = None

    def list_instances(self) -> list[base.InstanceState]:
        return []

    def hand_off(self, *items: dispatch.QueueItem) -> None:
        """What the hypervisor's callbacks do: queue items."""
        for item in items:
            self._queue.put(item)

    @property
    def _close_timeout(self) -> float:
        return TIMEOUT

    def _lost(self, reason: str) -> str:
        return f"lost fake ({reason})"

    def _open(self) -> None:
        if self.failures:
            self.failures -= 1
            raise dispatch.ConnectFailed("cannot connect to fake")
        self.opened += 1

    def _release(self) -> None:
        self.released += 1

    def _translate(self, item: dispatch.HypervisorEvent) -> Observation | None:
        assert isinstance(item, FakeEvent)
        if item.name == "bug":
            raise KeyError(item.name)
        if not item.reported:
            return None
        return Observation(item.name, item.name, Transition.PAUSED, PowerState.PAUSED, "E", "D",
                           occurred_at=OCCURRED)  # fmt: skip

    def _wait_for_items(self) -> list[dispatch.QueueItem]:
        if self.poll_error is not None:
            error, self.poll_error = self.poll_error, None
            raise error
        return super()._wait_for_items()


class Recorder:
    """A listener recording its calls; ``hold`` blocks it in its first resync; may raise."""

    def __init__(self, *, fail_events: int = 0) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.hold = threading.Event()
        self.hold.set()
        self.fail_events = fail_events
        self._changed = threading.Condition()

    def _record(self, call: tuple[str, Any]) -> None:
        with self._changed:
            self.calls.append(call)
            self._changed.notify_all()

    def on_events(self, observations: list[Observation]) -> None:
        self._record(("events", [o.instance_name for o in observations]))
        if self.fail_events:
            self.fail_events -= 1
            raise RuntimeError("listener bug")

    def on_resync(self, reason: str) -> None:
        self._record(("resync", reason))
        assert self.hold.wait(TIMEOUT)

    def on_disconnected(self, reason: str) -> None:
        self._record(("disconnected", reason))

    def wait_for(self, call: tuple[str, Any], count: int = 1) -> None:
        self.wait_until(lambda: self.calls.count(call) >= count, str(call))

    def wait_until(self, condition: Any, what: str) -> None:
        with self._changed:
            if not self._changed.wait_for(condition, TIMEOUT):
                raise AssertionError(f"no {what} in {TIMEOUT} s: {self.calls}")

    def reported(self, name: str) -> bool:
        return any(kind == "events" and name in names for kind, names in self.calls)


def held(started, listener: Recorder, backend: FakeBackend | None = None) -> FakeBackend:
    """A backend whose listener is held in its first resync: items queue meanwhile."""
    listener.hold.clear()
    backend = started(backend or FakeBackend(), listener)
    listener.wait_for(("resync", "connected"))
    return backend


def test_every_event_waiting_is_reported_in_one_call_in_order(started):
    listener = Recorder()
    backend = held(started, listener)
    backend.hand_off(*(FakeEvent(f"vm-{i}") for i in range(50)))
    listener.hold.set()

    listener.wait_until(lambda: listener.reported("vm-49"), "vm-49")
    assert listener.calls == [
        ("resync", "connected"),
        ("events", [f"vm-{i}" for i in range(50)]),
    ]


def test_events_queued_before_a_resync_request_are_reported_before_it(started):
    listener = Recorder()
    backend = held(started, listener)
    backend.hand_off(FakeEvent("a"), FakeEvent("b"))
    backend.request_resync("periodic")
    backend.hand_off(FakeEvent("c"))
    listener.hold.set()

    listener.wait_for(("events", ["c"]))
    assert listener.calls == [
        ("resync", "connected"),
        ("events", ["a", "b"]),
        ("resync", "periodic"),
        ("events", ["c"]),
    ]


def test_a_failing_listener_is_logged_and_skipped_on_the_same_connection(started, caplog):
    listener = Recorder(fail_events=1)
    backend = held(started, listener)
    backend.hand_off(FakeEvent("a"))
    listener.hold.set()
    listener.wait_for(("events", ["a"]))
    backend.hand_off(FakeEvent("b"))

    listener.wait_for(("events", ["b"]))
    assert (backend.opened, backend.released, backend.reconnects) == (1, 0, 0)
    assert backend.problem is None
    failures = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(failures) == 1 and "on_events failed" in failures[0].getMessage()
    assert failures[0].exc_info is not None  # with its traceback


def test_an_event_whose_translation_fails_is_logged_and_the_others_reported(started, caplog):
    listener = Recorder()
    backend = held(started, listener)
    backend.hand_off(FakeEvent("a"), FakeEvent("bug"), FakeEvent("b"))
    listener.hold.set()

    listener.wait_until(lambda: listener.reported("b"), "b")
    assert listener.calls == [("resync", "connected"), ("events", ["a", "b"])]
    assert any("translating" in r.getMessage() and r.exc_info for r in caplog.records)
    assert backend.reconnects == 0


def test_a_close_of_the_connection_is_announced_then_reconnected_counted_and_resynced(started):
    listener = Recorder()
    backend = held(started, listener)
    backend.hand_off(FakeEvent("a"), dispatch.Closed(backend._generation, "end of file"))
    listener.hold.set()

    listener.wait_for(("resync", "connected"), count=2)
    assert listener.calls == [
        ("resync", "connected"),
        ("events", ["a"]),
        ("disconnected", "end of file"),
        ("resync", "connected"),
    ]
    assert (backend.opened, backend.reconnects) == (2, 1)


def test_a_close_of_an_earlier_connection_is_ignored(started):
    listener = Recorder()
    backend = held(started, listener)
    backend.hand_off(dispatch.Closed(backend._generation - 1, "end of file"), FakeEvent("a"))
    listener.hold.set()

    listener.wait_for(("events", ["a"]))
    assert (backend.opened, backend.reconnects) == (1, 0)


def test_a_failure_while_serving_is_a_lost_connection(started):
    listener = Recorder()
    backend = FakeBackend()
    backend.poll_error = ConnectionResetError("gone")
    started(backend, listener)

    listener.wait_for(("resync", "connected"), count=2)
    assert ("disconnected", "ConnectionResetError: gone") in listener.calls
    assert backend.reconnects == 1


def test_failed_connections_are_retried_and_show_as_the_problem_until_one_succeeds(
    started, caplog
):
    listener = Recorder()
    backend = started(FakeBackend(failures=3), listener)

    listener.wait_for(("resync", "connected"))
    retries = [r.getMessage() for r in caplog.records if "retrying in" in r.getMessage()]
    assert len(retries) == 3 and all("cannot connect to fake" in r for r in retries)
    # Failed attempts are not reconnections: the first connection is the first success.
    assert (backend.opened, backend.reconnects, backend.problem) == (1, 0, None)


def test_nothing_is_reported_after_close(started):
    listener = Recorder()
    backend = held(started, listener)
    backend.hand_off(FakeEvent("a"))
    listener.hold.set()
    backend.close()
    calls = list(listener.calls)
    backend.hand_off(FakeEvent("b"))
    backend.request_resync("periodic")

    assert backend._thread is not None and not backend._thread.is_alive()
    assert listener.calls == calls
    assert ("events", ["b"]) not in calls


# An item the fake hypervisor queues: an event (reported or not), a resync
# request, or a close of an earlier connection (ignored).
ITEMS = st.lists(
    st.one_of(
        st.builds(FakeEvent, st.sampled_from("abcdef"), st.booleans()),
        st.builds(dispatch.ResyncRequested, st.sampled_from(["periodic", "asked"])),
        st.just(dispatch.Closed(-1, "stale")),
    ),
    max_size=30,
)


def model(items: list[dispatch.QueueItem]) -> list[tuple[str, Any]]:
    """The calls a listener should see for ``items`` queued at once."""
    calls: list[tuple[str, Any]] = []
    batch: list[str] = []
    for item in items:
        if isinstance(item, FakeEvent):
            batch += [item.name] if item.reported else []
            continue
        if batch:
            calls.append(("events", batch))
            batch = []
        if isinstance(item, dispatch.ResyncRequested):
            calls.append(("resync", item.reason))
    return calls + ([("events", batch)] if batch else [])


@settings(max_examples=40, deadline=None)
@given(items=ITEMS)
def test_items_queued_at_once_are_reported_as_the_model_says(items):
    listener = Recorder()
    listener.hold.clear()
    backend = FakeBackend()
    backend.connect(listener)
    try:
        listener.wait_for(("resync", "connected"))
        backend.hand_off(*items, FakeEvent("end"))
        listener.hold.set()
        listener.wait_until(lambda: listener.reported("end"), "end")
    finally:
        backend.close()

    assert listener.calls == [("resync", "connected"), *model([*items, FakeEvent("end")])]


class Domain:
    """What a libvirt callback reads of its domain: the local struct, no RPC."""

    def UUIDString(self) -> str:  # libvirt's names
        return "uuid-1"

    def name(self) -> str:
        return "vm-1"


@pytest.mark.parametrize(
    ("hand_off", "expected"),
    [
        (lambda b, dom: b._on_reboot(None, dom, None), (Transition.REBOOTED, "REBOOT", "")),
        (
            lambda b, dom: b._on_lifecycle(None, dom, 5, 1, None),
            (Transition.STOPPED, "STOPPED", "DESTROYED"),
        ),
    ],
    ids=["reboot", "stopped-destroyed"],
)
def test_libvirt_callbacks_queue_typed_items_that_translate_by_the_table(hand_off, expected):
    from hypervisor_notifier.backends.libvirt.backend import DomainEvent, LibvirtBackend
    from hypervisor_notifier.conf import register_opts

    conf = cfg.ConfigOpts()
    register_opts(conf)
    conf([], default_config_files=[], default_config_dirs=[])
    backend = LibvirtBackend(conf)

    hand_off(backend, Domain())
    item = backend._queue.get_nowait()
    observation = backend._translate(item)

    assert isinstance(item, DomainEvent) and (item.uuid, item.name) == ("uuid-1", "vm-1")
    assert observation is not None
    assert (observation.transition, observation.reason, observation.detail) == expected
