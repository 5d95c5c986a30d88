"""Builders shared by the unit and functional tests."""

from __future__ import annotations

import uuid
from typing import Any

import libvirt

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


def libvirt_error(code: int) -> libvirt.libvirtError:
    """A libvirtError whose get_error_code() is ``code`` (the binding reads it from ``err``)."""
    exc = libvirt.libvirtError(f"error {code}")
    exc.err = (code, libvirt.VIR_FROM_NONE, f"error {code}", libvirt.VIR_ERR_ERROR,
               None, None, None, -1, -1)  # fmt: skip
    return exc
