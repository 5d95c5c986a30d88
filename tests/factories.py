"""Builders shared by the unit and functional tests; libvirt-free, so the consumer's tests
run on a host without the binding (libvirt's own builders: ``tests/libvirt_factories.py``)."""

from __future__ import annotations

import uuid
from typing import Any

from hypervisor_notifier.events import LifecycleEvent, PowerState, Transition, utcnow


def make_event(**overrides: Any) -> LifecycleEvent:
    """A valid LifecycleEvent with fresh ids; any field can be overridden."""
    fields: dict[str, Any] = {
        "event_id": str(uuid.uuid4()),
        "host": "compute1",
        "hypervisor": "libvirt",
        "instance_uuid": str(uuid.uuid4()),
        "instance_name": "instance-00000001",
        "transition": Transition.STOPPED,
        "power_state": PowerState.SHUTDOWN,
        "reason": "STOPPED",
        "detail": "SHUTDOWN",
        "occurred_at": utcnow(),
        "seq": 1,
        "resync": False,
    }
    fields.update(overrides)
    return LifecycleEvent(**fields)
