"""libvirt's guest fault events and a crash's circumstances, translated.

Pure data, no libvirt import, like :mod:`.transitions`: the codes of each
event's callback arguments are libvirt's stable ABI (the
``virDomainEventWatchdogAction``, ``virDomainEventIOErrorAction``,
``virConnectDomainEventAgentLifecycle*`` and ``virDomainMemoryFailure*``
enums), and a unit test checks them against the installed binding. Names
are libvirt's, lower case; a code newer than these tables keeps its number
(``action_7``), so a newer libvirt's fault is still reported.

The rule of every fault: ``reason`` is the event's name (``WATCHDOG``);
``detail`` is the name of the event's code where it has one (the action,
the agent's reason), upper case like a lifecycle event's detail, else empty;
``details`` holds the event's arguments by the names of doc/source/faults.rst.
"""

from __future__ import annotations

import dataclasses
import xml.etree.ElementTree as ElementTree
from collections.abc import Mapping, Sequence

from hypervisor_notifier.events import Scalar
from hypervisor_notifier.faults import Fault

#: ``virDomainEventWatchdogAction`` by code.
WATCHDOG_ACTIONS = ("none", "pause", "reset", "poweroff", "shutdown", "debug", "injectnmi")
#: ``virDomainEventIOErrorAction`` by code.
IO_ERROR_ACTIONS = ("none", "pause", "report")
#: ``virConnectDomainEventAgentLifecycleState`` by code (0 is unused).
AGENT_STATES = {1: Fault.AGENT_CONNECTED, 2: Fault.AGENT_DISCONNECTED}
#: ``virConnectDomainEventAgentLifecycleReason`` by code.
AGENT_REASONS = ("unknown", "domain_started", "channel")
#: ``virDomainMemoryFailureRecipientType`` by code.
MEMORY_FAILURE_RECIPIENTS = ("hypervisor", "guest")
#: ``virDomainMemoryFailureActionType`` by code.
MEMORY_FAILURE_ACTIONS = ("ignore", "inject", "fatal", "reset")
#: ``virDomainMemoryFailureFlags`` bits, by their ``details`` key.
MEMORY_FAILURE_FLAGS = {"action_required": 1, "recursive": 2}
#: libvirt's action on a guest crash when the domain XML names none.
DEFAULT_ON_CRASH = "destroy"


@dataclasses.dataclass(frozen=True)
class FaultTranslation:
    """A fault event's meaning, with libvirt's raw names.

    Arguments:
        fault: What went wrong.
        reason: libvirt's event name (``WATCHDOG``).
        detail: The name of the event's code (``PAUSE``), or empty.
        details: The event's arguments (doc/source/faults.rst).

    """

    fault: Fault
    reason: str
    detail: str
    details: Mapping[str, Scalar] = dataclasses.field(default_factory=dict, hash=False)


def name(names: Sequence[str], code: int, kind: str) -> str:
    """The name ``names`` gives ``code``; ``<kind>_<code>`` for a code newer than them."""
    return names[code] if 0 <= code < len(names) else f"{kind}_{code}"


def watchdog(action: int) -> FaultTranslation:
    """``VIR_DOMAIN_EVENT_ID_WATCHDOG``: the guest's watchdog fired; libvirt did ``action``."""
    action_name = name(WATCHDOG_ACTIONS, action, "action")
    details = {"action": action_name}
    return FaultTranslation(Fault.WATCHDOG, "WATCHDOG", action_name.upper(), details)


def io_error(path: str, alias: str, action: int, error: str | None) -> FaultTranslation:
    """``VIR_DOMAIN_EVENT_ID_IO_ERROR_REASON`` (``error`` None: the older ``IO_ERROR``).

    Arguments:
        path: The disk's source on the host (may be empty: a network disk).
        alias: The disk's device alias (``virtio-disk0``, ``ua-...``).
        action: What libvirt did (the disk's ``error_policy``).
        error: What failed, as the hypervisor says (``enospc``; may be empty).

    """
    action_name = name(IO_ERROR_ACTIONS, action, "action")
    details: dict[str, Scalar] = {"device": alias, "path": path, "action": action_name}
    if error is not None:
        details["error"] = error
    event = "IO_ERROR" if error is None else "IO_ERROR_REASON"
    return FaultTranslation(Fault.IO_ERROR, event, action_name.upper(), details)


def control_error() -> FaultTranslation:
    """``VIR_DOMAIN_EVENT_ID_CONTROL_ERROR``: libvirt lost control of the guest's process."""
    return FaultTranslation(Fault.CONTROL_ERROR, "CONTROL_ERROR", "")


def agent_lifecycle(state: int, reason: int) -> FaultTranslation | None:
    """``VIR_DOMAIN_EVENT_ID_AGENT_LIFECYCLE``; None for a state newer than this table."""
    fault = AGENT_STATES.get(state)
    if fault is None:
        return None
    reason_name = name(AGENT_REASONS, reason, "reason")
    state_name = fault.value.removeprefix("agent_")
    details = {"state": state_name, "reason": reason_name}
    return FaultTranslation(fault, "AGENT_LIFECYCLE", reason_name.upper(), details)


def memory_failure(recipient: int, action: int, flags: int) -> FaultTranslation:
    """``VIR_DOMAIN_EVENT_ID_MEMORY_FAILURE``: a hardware memory error reached ``recipient``."""
    action_name = name(MEMORY_FAILURE_ACTIONS, action, "action")
    details: dict[str, Scalar] = {
        "recipient": name(MEMORY_FAILURE_RECIPIENTS, recipient, "recipient"),
        "action": action_name,
    }
    details.update({key: bool(flags & bit) for key, bit in MEMORY_FAILURE_FLAGS.items()})
    return FaultTranslation(Fault.MEMORY_FAILURE, "MEMORY_FAILURE", action_name.upper(), details)


def device_removed(alias: str) -> FaultTranslation:
    """``VIR_DOMAIN_EVENT_ID_DEVICE_REMOVED``: the device ``alias`` left the guest."""
    return FaultTranslation(Fault.DEVICE_REMOVED, "DEVICE_REMOVED", "", {"device": alias})


def device_removal_failed(alias: str) -> FaultTranslation:
    """``VIR_DOMAIN_EVENT_ID_DEVICE_REMOVAL_FAILED``: the guest did not release ``alias``."""
    details = {"device": alias}
    return FaultTranslation(Fault.DEVICE_REMOVAL_FAILED, "DEVICE_REMOVAL_FAILED", "", details)


def crash_details(
    xml: str | None, state: str | None, state_reason: str | None
) -> dict[str, Scalar]:
    """The ``details`` of a ``crashed`` lifecycle event: what libvirt tells of the crash.

    Arguments:
        xml: The domain's XML, or None if it could not be read (it is gone).
        state: The domain's state name now, lower case (``crashed``), or None.
        state_reason: That state's reason name, lower case (``panicked``), or None.

    Returns ``on_crash`` (what libvirt does with a crashed guest: ``destroy``,
    ``restart``, ``preserve``, ...), ``panic_model`` (the panic device that
    reported it: ``isa`` is QEMU's pvpanic) and the ``state`` and
    ``state_reason`` the domain was in when the event was translated; a key
    is absent when libvirt did not say.

    """
    details: dict[str, Scalar] = {}
    if xml is not None:
        # The XML comes from libvirtd, which generated it.
        root = ElementTree.fromstring(xml)  # noqa: S314
        details["on_crash"] = (root.findtext("on_crash") or DEFAULT_ON_CRASH).strip()
        panic = root.find("devices/panic")
        if panic is not None and panic.get("model"):
            details["panic_model"] = panic.get("model")
    if state is not None:
        details["state"] = state
    if state_reason is not None:
        details["state_reason"] = state_reason
    return details
