"""Guest faults from vSphere (doc/source/faults.rst, "ESX") through the real service and RabbitMQ.

The simulator raises none of these faults itself: the test posts the events
through vSphere's own ``EventManager.PostEvent`` from a session of its own,
gives a VM a pending question (tools/vcsim/question.go), and removes a
device with a real ``ReconfigVM_Task``. The service reads them as it would
from vCenter: its event collector and PropertyCollector filter.
"""

from __future__ import annotations

import contextlib
import datetime

import pytest
from pyVim import connect
from pyVmomi import vim

from hypervisor_notifier.events import PowerState, Transition
from hypervisor_notifier.faults import Fault

from .conftest import Collector

VM = "ha-host_VM{}"  # the simulator's VM names with -esx
OUT_OF_SPACE = "There is no more space for virtual disk 'ha-host_VM1.vmdk'. Click Retry."


@pytest.fixture
def watched(vcsim, start_service, subscribe):
    """The service watching the simulator: (a session of the test's, VMs by name, collectors)."""
    session = vcsim.session()
    vms = vcsim.vms_by_name(session)
    faults = Collector()
    _, lifecycle = subscribe(on_fault=faults)
    service = start_service(DEFAULT={"backend": "esx"}, esx=vcsim.config())
    service.wait_for_log("resync (connected)")
    yield session, vms, lifecycle, faults
    with contextlib.suppress(Exception):  # the simulator may have dropped it already
        connect.Disconnect(session)


def post(session, vm, kind, **fields):
    """Post a vSphere event about ``vm`` through the EventManager, as vSphere itself would."""
    event = getattr(vim.event, kind)(
        key=0, chainId=0, createdTime=datetime.datetime.now(datetime.timezone.utc),
        userName="", vm=vim.event.VmEventArgument(vm=vm, name=vm.name), **fields,
    )  # fmt: skip
    session.content.eventManager.PostEvent(event)


def seen(event):
    return event.fault, event.reason, event.detail, dict(event.details)


def faults_of(faults, vm, count):
    uuid = vm.config.instanceUuid
    assert faults.wait_for(lambda e: e.instance_uuid == uuid and count <= sum(
        1 for other in faults.events if other.instance_uuid == uuid
    ))  # fmt: skip
    return [seen(e) for e in faults.events if e.instance_uuid == uuid]


def stop_and_wait(vm, lifecycle):
    """Power off: once its stop is in, every earlier event of the VM is (per-guest order)."""
    uuid = vm.config.instanceUuid
    vm.PowerOffVM_Task()
    lifecycle.wait_for(
        lambda e: e.instance_uuid == uuid and e.transition is Transition.STOPPED and not e.resync
    )


def test_ha_resets_and_failed_power_ons_arrive_as_watchdog_and_control_error_faults(
    watched,
):
    session, vms, lifecycle, faults = watched
    vm = vms[VM.format(0)]

    post(session, vm, "VmDasBeingResetEvent", reason="vmtoolsHeartbeatFailure")
    post(session, vm, "VmDasResetFailedEvent")
    post(
        session, vm, "VmFailedToPowerOnEvent",
        reason=vim.fault.InsufficientResourcesFault(msg="Insufficient memory."),
    )  # fmt: skip
    post(session, vm, "VmDasUpdateErrorEvent")  # HA configuration, no guest fault: not reported
    stop_and_wait(vm, lifecycle)

    assert faults_of(faults, vm, 3) == [
        (Fault.WATCHDOG, "VmDasBeingResetEvent", "vmtoolsHeartbeatFailure",
         {"action": "reset", "failed": False}),
        (Fault.WATCHDOG, "VmDasResetFailedEvent", "", {"action": "reset", "failed": True}),
        (Fault.CONTROL_ERROR, "VmFailedToPowerOnEvent", "powerOn",
         {"operation": "powerOn", "error": "InsufficientResourcesFault",
          "message": "Insufficient memory."}),
    ]  # fmt: skip
    assert all(e.hypervisor == "esx" and e.instance_name == vm.name for e in faults.events)


def test_a_question_about_a_full_datastore_is_one_io_error_and_the_next_question_another(
    vcsim, watched
):
    session, vms, lifecycle, faults = watched
    vm = vms[VM.format(1)]

    vcsim.ask(vm.name, "q1", "msg.hbacommon.outofspace", OUT_OF_SPACE, "ha-host_VM1.vmdk")
    faults_of(faults, vm, 1)  # seen pending (an answer in the same update would hide it)
    # vCenter's message event about the same question: the same fault, not a second one.
    post(
        session, vm, "VmMessageErrorEvent", message=OUT_OF_SPACE,
        messageInfo=[vim.vm.Message(id="msg.hbacommon.outofspace", text=OUT_OF_SPACE)],
    )  # fmt: skip
    vcsim.answer(vm.name)
    vcsim.ask(vm.name, "q2", "msg.uuid.altered", "Did you move it or copy it?")
    stop_and_wait(vm, lifecycle)

    assert faults_of(faults, vm, 2) == [
        (Fault.IO_ERROR, "VirtualMachineQuestion", "msg.hbacommon.outofspace",
         {"action": "pause", "error": "enospc", "path": "ha-host_VM1.vmdk",
          "message_id": "msg.hbacommon.outofspace", "text": OUT_OF_SPACE}),
        (Fault.CONTROL_ERROR, "VirtualMachineQuestion", "msg.uuid.altered",
         {"severity": "question", "message_id": "msg.uuid.altered",
          "text": "Did you move it or copy it?"}),
    ]  # fmt: skip


def test_a_device_hot_removed_from_a_running_vm_is_a_device_removed_fault(watched):
    _, vms, lifecycle, faults = watched
    vm = vms[VM.format(2)]
    nic = next(
        d for d in vm.config.hardware.device if isinstance(d, vim.vm.device.VirtualEthernetCard)
    )
    spec = vim.vm.ConfigSpec(
        deviceChange=[vim.vm.device.VirtualDeviceSpec(operation="remove", device=nic)]
    )

    task = vm.ReconfigVM_Task(spec)
    assert task.info.state in ("running", "success", "queued"), task.info.error
    stop_and_wait(vm, lifecycle)

    assert faults_of(faults, vm, 1) == [
        (Fault.DEVICE_REMOVED, "VmReconfiguredEvent", "remove",
         {"device": nic.deviceInfo.label, "device_key": nic.key,
          "device_type": type(nic)._wsdlName}),
    ]  # fmt: skip


def test_a_guest_os_crash_is_a_crashed_lifecycle_event_of_a_vm_still_running(watched):
    session, vms, lifecycle, faults = watched
    vm = vms[VM.format(3)]
    uuid = vm.config.instanceUuid

    post(session, vm, "VmGuestOSCrashedEvent")
    crashed = lifecycle.wait_for(lambda e: e.instance_uuid == uuid and not e.resync)

    assert (crashed.transition, crashed.power_state) == (Transition.CRASHED, PowerState.RUNNING)
    assert (crashed.reason, crashed.detail) == ("VmGuestOSCrashedEvent", "guest")
    assert faults.events == []


def test_vmware_tools_stopping_and_starting_is_the_guest_agent_leaving_and_connecting(
    vcsim, watched
):
    _, vms, lifecycle, faults = watched
    vm = vms[VM.format(0)]

    vcsim.tools(vm.name, "guestToolsRunning")
    faults_of(faults, vm, 1)  # seen running (a stop in the same update would hide the start)
    vcsim.tools(vm.name, "guestToolsExecutingScripts")  # still running: no change of the agent
    vcsim.tools(vm.name, "guestToolsNotRunning")
    stop_and_wait(vm, lifecycle)

    assert faults_of(faults, vm, 2) == [
        (Fault.AGENT_CONNECTED, "guest.toolsRunningStatus", "guestToolsRunning", {}),
        (Fault.AGENT_DISCONNECTED, "guest.toolsRunningStatus", "guestToolsNotRunning", {}),
    ]
