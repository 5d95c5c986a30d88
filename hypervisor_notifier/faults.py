"""Guest faults and device changes: ``hypervisor.instance.<fault>`` events.

Part of the public wire contract (doc/source/wire.rst), schema 1.2. A fault
says what went wrong in or around a running guest (its watchdog fired, a
disk failed, a device was removed); it implies no power state change: when
the guest's state does change (a watchdog that pauses or resets it), a
lifecycle event follows on its own. Fault events share the per-host ``seq``,
the filters, the outbox, signing and ordering of lifecycle events.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping
from typing import ClassVar

from hypervisor_notifier.events import GUEST_READERS, INSTANCE_EVENT_PREFIX, Observed, Stamp
from hypervisor_notifier.payload import (
    FieldReader,
    enum_field,
    text_field,
)


class Fault(enum.StrEnum):
    """What went wrong in or around a guest; ``details`` says more (doc/source/wire.rst).

    Each value, on the wire, is the member's name in lower case.
    """

    #: The guest's watchdog device fired (``action``: what the hypervisor did).
    WATCHDOG = enum.auto()
    #: A disk I/O error (``device``, ``path``, ``action``, ``error``: e.g. ``enospc``).
    IO_ERROR = enum.auto()
    #: The hypervisor lost control of the guest's process (libvirt CONTROL_ERROR).
    CONTROL_ERROR = enum.auto()
    #: The guest agent connected or disconnected (``state``, ``reason``).
    AGENT_CONNECTED = enum.auto()
    AGENT_DISCONNECTED = enum.auto()
    #: A memory failure in the guest or the host (``recipient``, ``action``).
    MEMORY_FAILURE = enum.auto()
    #: A device left the guest (``device``), or failed to (``device``).
    DEVICE_REMOVED = enum.auto()
    DEVICE_REMOVAL_FAILED = enum.auto()


@dataclasses.dataclass(frozen=True)
class FaultObservation(Observed):
    """One guest fault, as a backend saw it.

    Its own fields, then :class:`~hypervisor_notifier.events.Observed`'s by
    keyword: ``occurred_at``, and ``details``, the fault's own fields
    (doc/source/wire.rst lists them per fault).

    Arguments:
        instance_uuid: The guest's UUID (nova's instance UUID).
        instance_name: The guest's name on the hypervisor.
        fault: What went wrong.
        reason: The backend's raw event name (libvirt ``WATCHDOG``, ...).
        detail: The backend's raw detail name (libvirt's action, ...); may be empty.

    """

    instance_uuid: str
    instance_name: str
    fault: Fault
    reason: str
    detail: str


@dataclasses.dataclass(frozen=True, kw_only=True)
class FaultEvent(FaultObservation, Stamp):
    """One guest fault as published: ``hypervisor.instance.<fault>``, no state change implied.

    Its fields: a :class:`FaultObservation`'s and a
    :class:`~hypervisor_notifier.events.Stamp`'s, all given by keyword. It
    shares the per-host ``seq`` with the guest's lifecycle events, so a
    consumer orders both alike.
    """

    event_type_prefix = INSTANCE_EVENT_PREFIX
    kind_field = "fault"
    kind_readers: ClassVar[Mapping[str, FieldReader]] = {
        **GUEST_READERS,
        "fault": enum_field(str, Fault),
        "reason": text_field,
        "detail": text_field,
    }


FaultObservation.event_class = FaultEvent
