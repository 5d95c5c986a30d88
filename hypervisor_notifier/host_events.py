"""The hypervisor connection itself: ``hypervisor.host.<change>`` events.

Part of the public wire contract (doc/source/wire.rst), schema 1.2. While a
host's hypervisor connection is lost, what its guests do is unknown, not
stopped: the service says so with ``hypervisor.host.disconnected`` and
publishes nothing about a guest until it is back, resynced, and says
``hypervisor.host.connected`` with what the resync found. Host events share
the per-host ``seq``, the outbox, signing and routing of guest events; they
name no instance.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping
from typing import ClassVar

from hypervisor_notifier.events import HOST_EVENT_PREFIX, Observed, Stamp
from hypervisor_notifier.payload import (
    FieldReader,
    enum_field,
    text_field,
)


class HostChange(str, enum.Enum):
    """What happened to the hypervisor connection."""

    #: Lost (``reason``: why); every guest's state is unknown until ``connected``.
    DISCONNECTED = "disconnected"
    #: Back and resynced (``details``: what the resync found and changed).
    CONNECTED = "connected"


@dataclasses.dataclass(frozen=True)
class HostObservation(Observed):
    """The hypervisor connection changed, as the service saw it.

    Its own fields, then :class:`~hypervisor_notifier.events.Observed`'s by
    keyword: ``occurred_at`` (when the service noticed), and ``details``
    (doc/source/wire.rst lists them per change).

    Arguments:
        change: What happened.
        reason: Why, in a few words (``end of file``; ``started``, ``reconnected``).

    """

    change: HostChange
    reason: str


@dataclasses.dataclass(frozen=True, kw_only=True)
class HostEvent(HostObservation, Stamp):
    """A host event as published: ``hypervisor.host.<change>``, about no guest.

    Given by keyword: the ``change``, ``reason``, ``occurred_at`` and
    ``details`` of the observation, then the stamp
    (:class:`~hypervisor_notifier.events.Stamp`). Its :attr:`subject` is
    empty: host events are ordered among themselves, not with a guest's.
    """

    event_type_prefix = HOST_EVENT_PREFIX
    kind_field = "change"
    kind_readers: ClassVar[Mapping[str, FieldReader]] = {
        "change": enum_field(str, HostChange),
        "reason": text_field,
    }


HostObservation.event_class = HostEvent
