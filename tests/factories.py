"""Builders shared by the unit and functional tests; libvirt-free, so the consumer's tests
run on a host without the binding (libvirt's own builders: ``tests/libvirt_factories.py``)."""

from __future__ import annotations

import uuid
from typing import Any

from hypervisor_notifier.events import LifecycleEvent, PowerState, Transition, utcnow
from hypervisor_notifier.faults import Fault, FaultEvent
from hypervisor_notifier.host_events import HostChange, HostEvent


def _stamp() -> dict[str, Any]:
    """The fields every kind of event has (a fresh event_id), and the time it occurred."""
    return {
        "event_id": str(uuid.uuid4()),
        "host": "compute1",
        "hypervisor": "libvirt",
        "occurred_at": utcnow(),
        "seq": 1,
    }


def make_event(**overrides: Any) -> LifecycleEvent:
    """A valid LifecycleEvent with fresh ids; any field can be overridden."""
    fields: dict[str, Any] = {
        **_stamp(),
        "instance_uuid": str(uuid.uuid4()),
        "instance_name": "instance-00000001",
        "transition": Transition.STOPPED,
        "power_state": PowerState.SHUTDOWN,
        "reason": "STOPPED",
        "detail": "SHUTDOWN",
        "resync": False,
    }
    fields.update(overrides)
    return LifecycleEvent(**fields)


def make_fault(fault: Fault, action: str = "", **overrides: Any) -> FaultEvent:
    """A valid FaultEvent of ``fault`` with fresh ids; ``action`` in its details and detail."""
    fields: dict[str, Any] = {
        **_stamp(),
        "instance_uuid": str(uuid.uuid4()),
        "instance_name": "instance-00000001",
        "fault": fault,
        "reason": fault.name,
        "detail": action.upper(),
        "details": {"action": action} if action else {},
    }
    fields.update(overrides)
    return FaultEvent(**fields)


def make_host_event(change: HostChange, **overrides: Any) -> HostEvent:
    """A valid HostEvent with a fresh id."""
    fields: dict[str, Any] = {
        **_stamp(),
        "change": change,
        "reason": "end of file" if change is HostChange.DISCONNECTED else "connected",
    }
    fields.update(overrides)
    return HostEvent(**fields)
