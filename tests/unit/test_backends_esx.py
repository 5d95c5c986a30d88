"""The esx backend's reading of vSphere update sets: real pyVmomi objects, a fake collector."""

from __future__ import annotations

import threading

import pytest
from oslo_config import cfg
from pyVmomi import vim, vmodl

from hypervisor_notifier.backends.esx import EsxBackend
from hypervisor_notifier.conf import register_opts
from hypervisor_notifier.events import PowerState, Transition
from hypervisor_notifier.faults import Fault

PC = vmodl.query.PropertyCollector
VM_REF = "vm-7"


def vm_update(kind="modify", **properties):
    changes = [PC.Change(name=name, op="assign", val=val) for name, val in properties.items()]
    return PC.ObjectUpdate(kind=kind, obj=vim.VirtualMachine(VM_REF), changeSet=changes)


def event(kind, key, vm_ref=VM_REF):
    argument = vim.event.VmEventArgument(vm=vim.VirtualMachine(vm_ref), name="web-1")
    return getattr(vim.event, kind)(key=key, vm=argument)


def page_update(*page):
    change = PC.Change(name="latestPage", op="assign", val=vim.event.Event.Array(page))
    return PC.ObjectUpdate(
        kind="modify", obj=vim.event.EventHistoryCollector("collector-1"), changeSet=[change]
    )


class FakeCollector:
    """Hands out prepared update sets, one per WaitForUpdatesEx."""

    def __init__(self) -> None:
        self.batches: list[list[PC.ObjectUpdate]] = []

    def WaitForUpdatesEx(self, version, options):  # the vSphere API's name
        updates = self.batches.pop(0)
        return PC.UpdateSet(version="-", filterSet=[PC.FilterUpdate(objectSet=updates)])


@pytest.fixture
def backend():
    conf = cfg.ConfigOpts()
    register_opts(conf)
    conf([])
    backend = EsxBackend(conf)
    backend._collector = FakeCollector()
    backend._si = object()  # logged in
    backend._pc = backend._collector
    backend._version = ""
    return backend


def observe(backend, baseline, *batches):
    """Apply the baseline as the backend's first wait does, then return what the batches report."""
    reported = []
    backend._collector.batches = [list(baseline), *(list(batch) for batch in batches)]
    backend._wait(lambda _observation: None)
    for _ in batches:
        backend._wait(reported.append)
    return reported


def run(backend, baseline, *batches):
    """The lifecycle changes the batches report, as tuples."""
    reported = observe(backend, baseline, *batches)
    return [(o.transition, o.power_state, o.reason, o.detail) for o in reported]


BASELINE = [
    vm_update(
        "enter",
        name="web-1",
        **{"config.instanceUuid": "uuid-7", "runtime.powerState": "poweredOn"},
    ),
    page_update(event("VmPoweredOnEvent", 5)),
]


def test_a_vm_appearing_after_the_baseline_is_reported_in_its_state(backend):
    migrated_in = PC.ObjectUpdate(
        kind="enter",
        obj=vim.VirtualMachine("vm-8"),
        changeSet=[
            PC.Change(name="name", op="assign", val="db-1"),
            PC.Change(name="config.instanceUuid", op="assign", val="uuid-8"),
            PC.Change(name="runtime.powerState", op="assign", val="poweredOn"),
        ],
    )

    assert run(backend, BASELINE, [migrated_in]) == [
        (Transition.STARTED, PowerState.RUNNING, "VmPoweredOnEvent", "poweredOn"),
    ]


def test_an_api_power_off_is_reported_with_its_event(backend):
    power_off = [
        page_update(event("VmPoweredOffEvent", 6)),
        vm_update(**{"runtime.powerState": "poweredOff"}),
    ]

    assert run(backend, BASELINE, power_off) == [
        (Transition.STOPPED, PowerState.SHUTDOWN, "VmPoweredOffEvent", "poweredOff"),
    ]


def test_a_guest_shutdown_names_the_stop_that_follows_even_in_a_later_batch(backend):
    asked = [page_update(event("VmGuestShutdownEvent", 6))]
    off = [vm_update(**{"runtime.powerState": "poweredOff"})]

    assert run(backend, BASELINE, asked, off) == [
        (Transition.SHUTTING_DOWN, PowerState.RUNNING, "VmGuestShutdownEvent", "guest"),
        (Transition.STOPPED, PowerState.SHUTDOWN, "VmGuestShutdownEvent", "poweredOff"),
    ]


def test_a_guest_shutdown_does_not_explain_a_later_suspend(backend):
    asked = [page_update(event("VmGuestShutdownEvent", 6))]
    suspended = [vm_update(**{"runtime.powerState": "suspended"})]
    off_later = [vm_update(**{"runtime.powerState": "poweredOff"})]

    reasons = [reason for *_, reason, _ in run(backend, BASELINE, asked, suspended, off_later)]
    assert reasons == ["VmGuestShutdownEvent", "VmSuspendedEvent", "VmPoweredOffEvent"]


def test_a_guest_event_arriving_after_the_stop_is_not_reported(backend):
    off = [vm_update(**{"runtime.powerState": "poweredOff"})]
    late = [page_update(event("VmGuestShutdownEvent", 6))]

    assert run(backend, BASELINE, off, late) == [
        (Transition.STOPPED, PowerState.SHUTDOWN, "VmPoweredOffEvent", "poweredOff"),
    ]


def test_events_seen_in_an_earlier_page_are_not_reported_again(backend):
    asked = [page_update(event("VmGuestShutdownEvent", 6), event("VmPoweredOnEvent", 5))]
    again = [page_update(event("VmStoppingEvent", 7), event("VmGuestShutdownEvent", 6))]

    assert len(run(backend, BASELINE, asked, again)) == 1


def test_two_changes_of_one_vm_in_one_batch_are_both_reported_in_order(backend):
    reset = [
        vm_update(**{"runtime.powerState": "poweredOff"}),
        vm_update(**{"runtime.powerState": "poweredOn"}),
    ]

    assert [t for t, *_ in run(backend, BASELINE, reset)] == [
        Transition.STOPPED,
        Transition.STARTED,
    ]


def test_a_vm_that_leaves_the_view_is_forgotten_not_reported(backend):
    leave = [PC.ObjectUpdate(kind="leave", obj=vim.VirtualMachine(VM_REF))]

    assert run(backend, BASELINE, leave) == []
    assert backend._vms == {}


def question(question_id, message_id="msg.hbacommon.outofspace"):
    message = vim.vm.Message(id=message_id, text="There is no more space for 'web-1.vmdk'.")
    return vim.vm.QuestionInfo(id=question_id, text="", message=[message])


def test_a_question_pending_at_the_baseline_is_not_reported_a_new_one_is(backend):
    baseline = [*BASELINE, vm_update(**{"runtime.question": question("1")})]
    answered = [vm_update(**{"runtime.question": None})]
    asked = [vm_update(**{"runtime.question": question("2")})]

    reported = observe(backend, baseline, answered, asked)
    assert [(o.fault, o.reason, o.details["error"]) for o in reported] == [
        (Fault.IO_ERROR, "VirtualMachineQuestion", "enospc")
    ]
    assert reported[0].instance_uuid == "uuid-7"


def test_a_message_told_before_a_power_change_is_news_after_it(backend):
    info = [vim.vm.Message(id="msg.hbacommon.outofspace", text="full")]
    error = event("VmMessageErrorEvent", 6)
    error.messageInfo, error.message = info, "full"
    again = event("VmMessageErrorEvent", 8)
    again.messageInfo, again.message = info, "full"
    reset = [
        vm_update(**{"runtime.powerState": "poweredOff"}),
        vm_update(**{"runtime.powerState": "poweredOn"}),
    ]

    reported = observe(backend, BASELINE, [page_update(error)], reset, [page_update(again)])
    assert [type(o).__name__ for o in reported] == [
        "FaultObservation", "Observation", "Observation", "FaultObservation",
    ]  # fmt: skip


def test_a_fault_of_a_stopped_vm_is_reported_and_changes_no_state(backend):
    failed = event("VmFailedToPowerOnEvent", 7)
    off = [vm_update(**{"runtime.powerState": "poweredOff"})]

    reported = observe(backend, BASELINE, off, [page_update(failed)])
    assert [getattr(o, "fault", None) for o in reported] == [None, Fault.CONTROL_ERROR]
    assert backend._vms[VM_REF].power_state == "poweredOff"


def test_tools_stopping_with_the_vm_is_reported_after_its_stop(backend):
    baseline = [*BASELINE, vm_update(**{"guest.toolsRunningStatus": "guestToolsRunning"})]
    off = [
        vm_update(
            **{
                "runtime.powerState": "poweredOff",
                "guest.toolsRunningStatus": "guestToolsNotRunning",
            }
        )
    ]

    reported = observe(backend, baseline, off)
    assert [getattr(o, "transition", None) or o.fault for o in reported] == [
        Transition.STOPPED, Fault.AGENT_DISCONNECTED,
    ]  # fmt: skip


def test_an_ha_reset_is_a_watchdog_fault_and_its_reset_a_reboot(backend):
    reset = [page_update(event("VmDasBeingResetEvent", 6), event("VmResettingEvent", 7))]

    reported = observe(backend, BASELINE, reset)
    assert reported[0].fault is Fault.WATCHDOG
    assert (reported[1].transition, reported[1].reason) == (
        Transition.REBOOTED, "VmResettingEvent",
    )  # fmt: skip


class ScriptedEsx(EsxBackend):
    """The esx backend's own dispatch thread, logged in to a fake collector of ``batches``."""

    def __init__(self, conf, batches) -> None:
        super().__init__(conf)
        self.collector = FakeCollector()
        self.collector.batches = list(batches)
        self.logins = self.logouts = 0

    def _open(self) -> None:
        self.logins += 1
        self._si, self._pc, self._version = object(), self.collector, ""
        self._wait(lambda _observation: None)  # the baseline, as _watch reads it

    def _release(self) -> None:
        if self._si is not None:
            self.logouts += 1
        self._si = self._pc = None


class IdleCollector(FakeCollector):
    def WaitForUpdatesEx(self, version, options):
        if self.batches:
            return super().WaitForUpdatesEx(version, options)
        threading.Event().wait(0.01)  # vSphere's maxWaitSeconds, shortened: no update
        return None


class FailingFirstListener:
    """Raises in its first on_events, as a buggy listener would; records every call."""

    def __init__(self) -> None:
        self.reported: list[list[Transition]] = []
        self.changed = threading.Condition()

    def on_events(self, observations):
        with self.changed:
            self.reported.append([o.transition for o in observations])
            self.changed.notify_all()
        if len(self.reported) == 1:
            raise RuntimeError("listener bug")

    def on_resync(self, reason):
        pass

    def on_disconnected(self, reason):
        pass


def test_a_failing_listener_is_logged_and_skipped_without_losing_the_session(caplog):
    conf = cfg.ConfigOpts()
    register_opts(conf)
    conf([])
    backend = ScriptedEsx(
        conf,
        [
            BASELINE,
            [vm_update(**{"runtime.powerState": "poweredOff"})],
            [vm_update(**{"runtime.powerState": "poweredOn"})],
        ],
    )
    backend.collector.__class__ = IdleCollector
    listener = FailingFirstListener()
    backend.connect(listener)
    try:
        with listener.changed:
            assert listener.changed.wait_for(lambda: len(listener.reported) == 2, 10)
        assert (backend.logins, backend.logouts, backend.reconnects) == (1, 0, 0)
        assert backend.problem is None
    finally:
        backend.close()

    assert listener.reported == [[Transition.STOPPED], [Transition.STARTED]]
    assert any("on_events failed" in r.getMessage() and r.exc_info for r in caplog.records)
