"""What a vSphere event or a VM's pending question means: the ESX translation table.

doc/source/faults.rst ("ESX") is the contract this module implements: which
vSphere event becomes which lifecycle transition or guest fault, with which
``details``. vSphere's raw event type is kept in ``reason``. Nothing here
talks to vSphere: :mod:`~hypervisor_notifier.backends.esx.backend` reads the
events and VM properties and hands them over, with the :class:`Vm` it keeps.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable
from typing import Any

from hypervisor_notifier import events
from hypervisor_notifier.backends.base import GuestObservation
from hypervisor_notifier.faults import Fault, FaultObservation

PowerState = events.PowerState
Transition = events.Transition

#: runtime.powerState -> (transition, power state, the event that usually explains it)
POWER_STATES: dict[str, tuple[Transition, PowerState, str]] = {
    "poweredOn": (Transition.STARTED, PowerState.RUNNING, "VmPoweredOnEvent"),
    "poweredOff": (Transition.STOPPED, PowerState.SHUTDOWN, "VmPoweredOffEvent"),
    "suspended": (Transition.SUSPENDED, PowerState.SUSPENDED, "VmSuspendedEvent"),
}
#: Events reported as a lifecycle event of their own, while the VM runs (its
#: power state stays poweredOn): -> (transition, detail, the power state it
#: announces: the change that follows is reported with this event's name).
GUEST_EVENTS: dict[str, tuple[Transition, str, str | None]] = {
    "VmGuestShutdownEvent": (Transition.SHUTTING_DOWN, "guest", "poweredOff"),
    "VmGuestRebootEvent": (Transition.REBOOTED, "guest", None),
    "VmResettingEvent": (Transition.REBOOTED, "reset", None),
    # ESX leaves a VM whose guest OS crashed powered on: the power state stays running.
    "VmGuestOSCrashedEvent": (Transition.CRASHED, "guest", None),
}
#: Events that only say why the next power-state change happens (vSphere HA).
EXPLAINING_EVENTS: dict[str, str] = {
    "VmPowerOffOnIsolationEvent": "poweredOff",
    "VmShutdownOnIsolationEvent": "poweredOff",
    "VmRestartedOnAlternateHostEvent": "poweredOn",
}
#: vSphere HA's VM monitoring gave up on the guest (its heartbeat lost, its OS
#: crashed, ...) and reset it, or failed to: a watchdog that fired.
HA_RESET_EVENTS = {
    "VmDasBeingResetEvent": False,
    "VmDasBeingResetWithScreenshotEvent": False,
    "VmDasResetFailedEvent": True,
}
#: A power operation on the VM failed -> the operation (vSphere's method name).
FAILED_OPERATIONS = {
    "VmFailedToPowerOnEvent": "powerOn",
    "VmFailedToPowerOffEvent": "powerOff",
    "VmFailedToResetEvent": "reset",
    "VmFailedToSuspendEvent": "suspend",
    "VmFailedToShutdownGuestEvent": "shutdownGuest",
    "VmFailedToRebootGuestEvent": "rebootGuest",
    "VmFailedToStandbyGuestEvent": "standbyGuest",
}
#: A message of the VM's own -> its severity (``VmMessageEvent``, for information, is not a fault).
MESSAGE_EVENTS = {"VmMessageErrorEvent": "error", "VmMessageWarningEvent": "warning"}
#: vSphere message ids that mean a disk I/O error -> its ``error`` (libvirt's name where one fits).
IO_MESSAGES = {
    # The datastore is full: ESX stops the guest and asks whether to retry.
    "msg.hbacommon.outofspace": "enospc",
    # The host lost its lock on the VM's disk files (the storage went away).
    "msg.hbacommon.locklost": "locklost",
}
#: guest.toolsRunningStatus -> the agent fault of a change to it: VMware Tools is the guest agent.
TOOLS_STATES = {
    "guestToolsRunning": Fault.AGENT_CONNECTED,
    "guestToolsExecutingScripts": Fault.AGENT_CONNECTED,  # running its start or stop scripts
    "guestToolsNotRunning": Fault.AGENT_DISCONNECTED,
}
#: The ``reason`` of an agent fault: the VM property, not an event (vSphere posts none).
TOOLS = "guest.toolsRunningStatus"
#: The pseudo event type of a VM's pending question (``runtime.question``), not a vSphere event.
QUESTION = "VirtualMachineQuestion"
RECONFIGURED = "VmReconfiguredEvent"

#: Event types collected: every event of the tables, and those that explain a power state.
EVENT_TYPES = sorted({
    *GUEST_EVENTS, *EXPLAINING_EVENTS, *HA_RESET_EVENTS, *FAILED_OPERATIONS, *MESSAGE_EVENTS,
    RECONFIGURED, *(reason for _, _, reason in POWER_STATES.values()),
})  # fmt: skip

_QUOTED = re.compile(r"'([^']+)'")


@dataclasses.dataclass
class Vm:
    """What the backend knows of one VM in scope."""

    uuid: str
    name: str
    power_state: str
    #: An event, and the power state it announced but that did not come yet.
    pending: tuple[str, str] | None = None
    #: The id of the question pending on the VM, once reported.
    question: str | None = None
    #: The message ids reported as faults since the VM last changed power state
    #: or answered a question (a message event and its question are one fault).
    told: set[str] = dataclasses.field(default_factory=set)
    #: Whether its guest agent (VMware Tools) runs, as last seen (None: not seen yet).
    agent: Fault | None = None


def event_observations(event: Any, vm: Vm) -> list[GuestObservation]:
    """What to report for one vSphere event of ``vm`` (maybe nothing); notes what it announces."""
    kind = type(event)._wsdlName
    if kind in EXPLAINING_EVENTS:
        if vm.power_state != EXPLAINING_EVENTS[kind]:
            vm.pending = (kind, EXPLAINING_EVENTS[kind])
        return []
    if kind in GUEST_EVENTS:
        # A guest event after the VM stopped came too late to announce anything.
        if vm.power_state != "poweredOn":
            return []
        transition, detail, announced = GUEST_EVENTS[kind]
        vm.pending = (kind, announced) if announced else None
        return [lifecycle(vm, transition, PowerState.RUNNING, kind, detail)]
    if kind in HA_RESET_EVENTS:
        return [_ha_reset(event, vm, kind)]
    if kind in FAILED_OPERATIONS:
        return [_failed_operation(event, vm, kind)]
    if kind in MESSAGE_EVENTS:
        messages = list(event.messageInfo or [])
        found = _message_fault(vm, kind, MESSAGE_EVENTS[kind], messages, event.message or "")
        return [found] if found else []
    if kind == RECONFIGURED:
        return list(_removed_devices(event, vm))
    return []


def question_observation(question: Any, vm: Vm) -> FaultObservation | None:
    """What to report for the VM's ``runtime.question`` (None: cleared, or told already)."""
    if question is None:
        # Answered: the guest runs again, and a message after this is a new fault.
        vm.question = None
        vm.told.clear()
        return None
    if question.id == vm.question:
        return None
    vm.question = question.id
    # A question blocks the guest until someone answers it: an error, whatever it asks.
    return _message_fault(vm, QUESTION, "question", list(question.message or []), question.text)


def tools_observation(status: Any, vm: Vm) -> FaultObservation | None:
    """What to report for the VM's ``guest.toolsRunningStatus`` (None: no change of the agent)."""
    agent = TOOLS_STATES.get(str(status)) if status else None
    if agent is None or agent is vm.agent:
        return None
    previous, vm.agent = vm.agent, agent
    # The first status seen (at login, or of a VM that entered the scope) is a state, not news.
    return fault(vm, agent, TOOLS, str(status)) if previous is not None else None


def lifecycle(
    vm: Vm, transition: Transition, power_state: PowerState, reason: str, detail: str
) -> events.Observation:
    """A lifecycle observation of ``vm``."""
    return events.Observation(
        vm.uuid, vm.name, transition, power_state, reason, detail, occurred_at=events.utcnow()
    )


def fault(
    vm: Vm, kind: Fault, reason: str, detail: str, **details: events.Scalar
) -> FaultObservation:
    """A fault observation of ``vm``; a detail given as None is left out (vSphere did not say)."""
    known = {key: value for key, value in details.items() if value is not None}
    return FaultObservation(
        vm.uuid, vm.name, kind, reason, detail, occurred_at=events.utcnow(), details=known
    )


def _ha_reset(event: Any, vm: Vm, kind: str) -> FaultObservation:
    return fault(
        vm, Fault.WATCHDOG, kind, getattr(event, "reason", None) or "",
        action="reset", failed=HA_RESET_EVENTS[kind],
        screenshot=getattr(event, "screenshotFilePath", None),
    )  # fmt: skip


def _failed_operation(event: Any, vm: Vm, kind: str) -> FaultObservation:
    error = event.reason  # a vmodl.MethodFault, or None
    return fault(
        vm, Fault.CONTROL_ERROR, kind, FAILED_OPERATIONS[kind],
        operation=FAILED_OPERATIONS[kind],
        error=type(error)._wsdlName if error is not None else None,
        message=_fault_text(error),
    )  # fmt: skip


def _message_fault(
    vm: Vm, reason: str, severity: str, messages: list[Any], text: str
) -> FaultObservation | None:
    """An io_error for a message vSphere names a disk error; else a control_error, or nothing.

    ``messages`` are vim.vm.Message objects (id, argument, text); the first
    names the fault. A warning that is no I/O error is not a fault.
    """
    first = messages[0] if messages else None
    message_id = first.id if first is not None else ""
    if message_id and message_id in vm.told:
        return None
    text = (first.text if first is not None and first.text else text) or ""
    error = IO_MESSAGES.get(message_id)
    if error is None and severity == "warning":
        return None
    if message_id:
        vm.told.add(message_id)
    if error is not None:
        # ESX stops the guest until the question is answered (Retry or Cancel).
        action = "pause" if severity == "question" else None
        return fault(
            vm, Fault.IO_ERROR, reason, message_id, action=action, error=error,
            path=_disk_path(first, text), message_id=message_id, text=text,
        )  # fmt: skip
    return fault(
        vm, Fault.CONTROL_ERROR, reason, message_id or severity,
        severity=severity, message_id=message_id or None, text=text,
    )  # fmt: skip


def _disk_path(message: Any, text: str) -> str | None:
    """The disk file a message names: its first text argument, or the first quoted name."""
    for argument in (message.argument or []) if message is not None else []:
        if isinstance(argument, str) and argument:
            return argument
    quoted = _QUOTED.search(text)
    return quoted.group(1) if quoted else None


def _removed_devices(event: Any, vm: Vm) -> Iterable[FaultObservation]:
    """A device_removed per device a completed reconfiguration removed from the VM."""
    spec = event.configSpec
    for change in (spec.deviceChange or []) if spec is not None else []:
        if str(change.operation) != "remove" or change.device is None:
            continue
        device = change.device
        label = device.deviceInfo.label if device.deviceInfo is not None else None
        yield fault(
            vm, Fault.DEVICE_REMOVED, RECONFIGURED, "remove",
            device=label or str(device.key), device_key=device.key,
            device_type=type(device)._wsdlName,
        )  # fmt: skip


def _fault_text(error: Any) -> str | None:
    """A vSphere fault's message (``msg``, else its first localized message), if it has one."""
    if error is None:
        return None
    if getattr(error, "msg", None):
        return str(error.msg)
    for message in getattr(error, "faultMessage", None) or []:
        if message.message:
            return str(message.message)
    return None
