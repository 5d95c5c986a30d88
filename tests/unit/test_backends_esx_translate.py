"""The ESX translation table (doc/source/faults.rst, "ESX") on recorded pyVmomi event objects."""

from __future__ import annotations

import pytest
from pyVmomi import vim, vmodl

from hypervisor_notifier.backends.esx import translate
from hypervisor_notifier.events import Observation, PowerState, Transition
from hypervisor_notifier.faults import Fault, FaultObservation


def running_vm():
    return translate.Vm("uuid-7", "web-1", "poweredOn")


def vm_event(kind, **fields):
    argument = vim.event.VmEventArgument(vm=vim.VirtualMachine("vm-7"), name="web-1")
    return getattr(vim.event, kind)(key=10, vm=argument, **fields)


def seen(observation):
    """An observation as a consumer reads it: kind, name, raw names, details."""
    if isinstance(observation, FaultObservation):
        kind = observation.fault
    else:
        kind = (observation.transition, observation.power_state)
    return kind, observation.reason, observation.detail, dict(observation.details)


def translated(event, vm=None):
    vm = vm or running_vm()
    return [seen(o) for o in translate.event_observations(event, vm)]


def message(id, text, *arguments):
    return vim.vm.Message(id=id, text=text, argument=list(arguments))


OUT_OF_SPACE = (
    "There is no more space for virtual disk 'web-1_1.vmdk'. You might be able to continue "
    "this session by freeing disk space on the relevant volume, and clicking Retry."
)


def test_every_collected_event_type_is_a_pyvmomi_event_type():
    # A misspelt name would be collected never (vSphere filters on the names).
    for kind in translate.EVENT_TYPES:
        assert issubclass(getattr(vim.event, kind), vim.event.Event), kind


@pytest.mark.parametrize(
    ("kind", "fields", "detail", "details"),
    [
        ("VmDasBeingResetEvent", {"reason": "vmtoolsHeartbeatFailure"},
         "vmtoolsHeartbeatFailure", {"action": "reset", "failed": False}),
        ("VmDasBeingResetWithScreenshotEvent",
         {"reason": "guestOsCrashFailure", "screenshotFilePath": "[ds1] web-1/shot.png"},
         "guestOsCrashFailure",
         {"action": "reset", "failed": False, "screenshot": "[ds1] web-1/shot.png"}),
        ("VmDasResetFailedEvent", {}, "", {"action": "reset", "failed": True}),
    ],
    ids=["heartbeat-lost", "with-screenshot", "reset-failed"],
)  # fmt: skip
def test_an_ha_reset_of_an_unresponsive_guest_is_a_watchdog_that_reset_it(
    kind, fields, detail, details
):
    assert translated(vm_event(kind, **fields)) == [(Fault.WATCHDOG, kind, detail, details)]


@pytest.mark.parametrize(("kind", "operation"), sorted(translate.FAILED_OPERATIONS.items()))
def test_a_failed_power_operation_is_a_control_error_naming_it_and_why(kind, operation):
    why = vim.fault.InsufficientResourcesFault(msg="Insufficient memory resources.")

    assert translated(vm_event(kind, reason=why)) == [
        (
            Fault.CONTROL_ERROR,
            kind,
            operation,
            {
                "operation": operation,
                "error": "InsufficientResourcesFault",
                "message": "Insufficient memory resources.",
            },
        )
    ]


def test_a_failed_power_on_without_a_fault_says_only_the_operation():
    event = vm_event("VmFailedToPowerOnEvent")

    assert translated(event)[0][3] == {"operation": "powerOn"}


def test_a_fault_without_msg_gives_its_localized_message():
    why = vim.fault.FileLocked(
        faultMessage=[vmodl.LocalizableMessage(key="lock", message="The file is locked.")]
    )

    details = translated(vm_event("VmFailedToPowerOnEvent", reason=why))[0][3]
    assert (details["error"], details["message"]) == ("FileLocked", "The file is locked.")


def test_a_question_about_a_full_datastore_is_an_io_error_that_paused_the_guest():
    vm = running_vm()
    question = vim.vm.QuestionInfo(
        id="42", text="msg.hbacommon.outofspace:" + OUT_OF_SPACE,
        message=[message("msg.hbacommon.outofspace", OUT_OF_SPACE, "web-1_1.vmdk")],
    )  # fmt: skip

    assert seen(translate.question_observation(question, vm)) == (
        Fault.IO_ERROR,
        "VirtualMachineQuestion",
        "msg.hbacommon.outofspace",
        {
            "action": "pause",
            "error": "enospc",
            "path": "web-1_1.vmdk",
            "message_id": "msg.hbacommon.outofspace",
            "text": OUT_OF_SPACE,
        },
    )
    # Seen again in a later update: the same question, not a new fault.
    assert translate.question_observation(question, vm) is None


def test_the_disk_of_a_message_without_arguments_is_read_from_its_quotes():
    question = vim.vm.QuestionInfo(
        id="1", text="", message=[message("msg.hbacommon.outofspace", OUT_OF_SPACE)]
    )

    observation = translate.question_observation(question, running_vm())
    assert observation.details["path"] == "web-1_1.vmdk"


def test_a_lost_disk_lock_question_is_an_io_error():
    question = vim.vm.QuestionInfo(
        id="3", text="", message=[message("msg.hbacommon.locklost", "Lost the lock.")]
    )

    observation = translate.question_observation(question, running_vm())
    assert (observation.fault, observation.details["error"]) == (Fault.IO_ERROR, "locklost")


def test_another_question_is_a_control_error_with_its_text():
    question = vim.vm.QuestionInfo(
        id="7", text="Did you move or copy it?",
        message=[message("msg.uuid.altered", "Did you move or copy it?")],
    )  # fmt: skip

    assert seen(translate.question_observation(question, running_vm())) == (
        Fault.CONTROL_ERROR,
        "VirtualMachineQuestion",
        "msg.uuid.altered",
        {
            "severity": "question",
            "message_id": "msg.uuid.altered",
            "text": "Did you move or copy it?",
        },
    )


def test_an_answered_question_is_forgotten_so_the_next_one_is_reported():
    vm = running_vm()
    question = vim.vm.QuestionInfo(
        id="1", text="", message=[message("msg.uuid.altered", "Moved or copied?")]
    )
    translate.question_observation(question, vm)
    translate.question_observation(None, vm)

    again = vim.vm.QuestionInfo(id="2", text="", message=[message("msg.other", "Again?")])
    assert translate.question_observation(again, vm) is not None


def test_a_message_error_about_a_full_datastore_is_an_io_error():
    event = vm_event(
        "VmMessageErrorEvent",
        message=OUT_OF_SPACE,
        messageInfo=[message("msg.hbacommon.outofspace", OUT_OF_SPACE, "web-1_1.vmdk")],
    )

    assert translated(event) == [
        (
            Fault.IO_ERROR,
            "VmMessageErrorEvent",
            "msg.hbacommon.outofspace",
            {
                "error": "enospc",
                "path": "web-1_1.vmdk",
                "message_id": "msg.hbacommon.outofspace",
                "text": OUT_OF_SPACE,
            },
        )
    ]


def test_another_message_error_is_a_control_error_and_an_info_message_nothing():
    error = vm_event(
        "VmMessageErrorEvent",
        message="The VM failed to resume.",
        messageInfo=[message("msg.checkpoint.resume.fail", "The VM failed to resume.")],
    )
    info = vm_event("VmMessageEvent", message="Hello", messageInfo=[])

    assert [f for f, *_ in translated(error)] == [Fault.CONTROL_ERROR]
    assert translated(info) == []


def test_a_warning_is_a_fault_only_when_it_is_an_io_error():
    full = vm_event(
        "VmMessageWarningEvent",
        message=OUT_OF_SPACE,
        messageInfo=[message("msg.hbacommon.outofspace", OUT_OF_SPACE)],
    )
    other = vm_event(
        "VmMessageWarningEvent",
        message="Tools are out of date.",
        messageInfo=[message("msg.tools.outdated", "Tools are out of date.")],
    )

    assert [f for f, *_ in translated(full)] == [Fault.IO_ERROR]
    assert translated(other) == []


def test_a_message_event_and_the_question_it_comes_with_are_one_fault_in_either_order():
    info = [message("msg.hbacommon.outofspace", OUT_OF_SPACE)]
    event = vm_event("VmMessageErrorEvent", message=OUT_OF_SPACE, messageInfo=info)
    question = vim.vm.QuestionInfo(id="1", text=OUT_OF_SPACE, message=info)

    first = running_vm()
    assert len(translate.event_observations(event, first)) == 1
    assert translate.question_observation(question, first) is None

    second = running_vm()
    assert translate.question_observation(question, second) is not None
    assert translate.event_observations(event, second) == []


def device_removal(*devices, operation="remove"):
    changes = [vim.vm.device.VirtualDeviceSpec(operation=operation, device=d) for d in devices]
    return vm_event("VmReconfiguredEvent", configSpec=vim.vm.ConfigSpec(deviceChange=changes))


def test_each_device_a_reconfiguration_removed_is_a_device_removed():
    disk = vim.vm.device.VirtualDisk(key=2001, deviceInfo=vim.Description(label="Hard disk 2"))
    nic = vim.vm.device.VirtualVmxnet3(key=4000)

    assert translated(device_removal(disk, nic)) == [
        (Fault.DEVICE_REMOVED, "VmReconfiguredEvent", "remove",
         {"device": "Hard disk 2", "device_key": 2001, "device_type": "VirtualDisk"}),
        (Fault.DEVICE_REMOVED, "VmReconfiguredEvent", "remove",
         {"device": "4000", "device_key": 4000, "device_type": "VirtualVmxnet3"}),
    ]  # fmt: skip


def test_a_reconfiguration_that_removes_nothing_is_not_reported():
    disk = vim.vm.device.VirtualDisk(key=2001)

    assert translated(device_removal(disk, operation="add")) == []
    assert translated(vm_event("VmReconfiguredEvent", configSpec=vim.vm.ConfigSpec())) == []


@pytest.mark.parametrize(
    ("kind", "transition", "detail"),
    [
        ("VmGuestRebootEvent", Transition.REBOOTED, "guest"),
        ("VmResettingEvent", Transition.REBOOTED, "reset"),
        ("VmGuestOSCrashedEvent", Transition.CRASHED, "guest"),
        ("VmGuestShutdownEvent", Transition.SHUTTING_DOWN, "guest"),
    ],
)
def test_guest_events_of_a_running_vm_are_lifecycle_events_that_keep_it_running(
    kind, transition, detail
):
    assert translated(vm_event(kind)) == [((transition, PowerState.RUNNING), kind, detail, {})]
    # Late, once the VM is off: they announce nothing any more.
    assert translated(vm_event(kind), translate.Vm("uuid-7", "web-1", "poweredOff")) == []


def test_a_fault_is_reported_whatever_the_power_state():
    stopped = translate.Vm("uuid-7", "web-1", "poweredOff")

    assert translated(vm_event("VmFailedToPowerOnEvent"), stopped)[0][0] is Fault.CONTROL_ERROR


@pytest.mark.parametrize(
    ("kind", "before", "announced"),
    [
        ("VmPowerOffOnIsolationEvent", "poweredOn", "poweredOff"),
        ("VmShutdownOnIsolationEvent", "poweredOn", "poweredOff"),
        ("VmRestartedOnAlternateHostEvent", "poweredOff", "poweredOn"),
    ],
)
def test_ha_power_changes_only_name_the_change_they_explain(kind, before, announced):
    vm = translate.Vm("uuid-7", "web-1", before)

    assert translate.event_observations(vm_event(kind), vm) == []
    assert vm.pending == (kind, announced)


def test_observations_name_the_vm_by_its_instance_uuid_and_name():
    (observation,) = translate.event_observations(vm_event("VmGuestRebootEvent"), running_vm())

    assert isinstance(observation, Observation)
    assert (observation.instance_uuid, observation.instance_name) == ("uuid-7", "web-1")


def test_vmware_tools_starting_and_stopping_is_the_guest_agent_connecting_and_leaving():
    vm = running_vm()
    statuses = ["guestToolsNotRunning", "guestToolsRunning", "guestToolsExecutingScripts",
                "guestToolsNotRunning", None, "guestToolsRunning"]  # fmt: skip

    reported = [translate.tools_observation(status, vm) for status in statuses]
    # The first status is the state found, not a change; scripts run with Tools running.
    assert [seen(o) if o else None for o in reported] == [
        None,
        (Fault.AGENT_CONNECTED, "guest.toolsRunningStatus", "guestToolsRunning", {}),
        None,
        (Fault.AGENT_DISCONNECTED, "guest.toolsRunningStatus", "guestToolsNotRunning", {}),
        None,
        (Fault.AGENT_CONNECTED, "guest.toolsRunningStatus", "guestToolsRunning", {}),
    ]
