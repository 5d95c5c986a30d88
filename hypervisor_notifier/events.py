"""Guest lifecycle events, their versioned payload, and what every published event carries.

This module is part of the public wire contract (doc/source/wire.rst).
It imports nothing hypervisor- or broker-specific, so the consumer library
can use it on hosts without libvirt-python or pyVmomi.

Two types flow through the service for each kind of event:

- an observation (an :class:`Observed`) is what a backend saw: :class:`Observation`
  (one guest changed state), :class:`~hypervisor_notifier.faults.FaultObservation`
  (a guest fault or device change), :class:`~hypervisor_notifier.host_events.
  HostObservation` (the hypervisor connection was lost or is back);
- an event is what goes on the wire: the observation stamped (:class:`Stamp`)
  by the service with its host, a stable ``event_id`` and a per-host ``seq``:
  :class:`LifecycleEvent`, ``FaultEvent``, ``HostEvent``.
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
import operator
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from hypervisor_notifier.payload import (
    SCALAR_TYPES,
    FieldReader,
    MalformedEvent,
    Scalar,
    converted_field,
    details_field,
    enum_field,
    nonempty_field,
    payload_object,
    text_field,
    typed_field,
)

#: Payload schema version. The major number changes only with an
#: incompatible change; decoders accept any minor version of their major.
#: 1.1 added the optional ``signature`` field (``signing.py``); 1.2 the
#: ``details`` object, guest fault events (``faults.py``) and host events
#: (``host_events.py``).
SCHEMA_VERSION = "1.2"
SCHEMA_MAJOR = "1"

#: The ``event_type`` of every guest event starts with it; host events' with
#: :data:`HOST_EVENT_PREFIX`.
INSTANCE_EVENT_PREFIX = "hypervisor.instance."
HOST_EVENT_PREFIX = "hypervisor.host."


class PowerState(enum.IntEnum):
    """A guest's power state, with the values of ``nova.compute.power_state``."""

    NOSTATE = 0
    RUNNING = 1
    PAUSED = 3
    SHUTDOWN = 4
    CRASHED = 6
    SUSPENDED = 7


class Transition(str, enum.Enum):
    """What happened to a guest.

    The names of nova's ``nova.virt.event`` transitions, lower case, plus the
    hypervisor facts nova has no name for (``crashed``, ``shutting_down``,
    ``rebooted``, ``vanished``): a consumer that only knows nova's names can
    ignore those.
    """

    STARTED = "started"
    STOPPED = "stopped"
    PAUSED = "paused"
    RESUMED = "resumed"
    SUSPENDED = "suspended"
    CRASHED = "crashed"
    #: The guest began to shut down (a ``shutdown -h now`` inside it, an ACPI
    #: request); ``stopped`` follows when it is off.
    SHUTTING_DOWN = "shutting_down"
    #: The guest rebooted without its process stopping.
    REBOOTED = "rebooted"
    MIGRATION_COMPLETED = "migration_completed"
    POSTCOPY_STARTED = "postcopy_started"
    #: A resync no longer lists a guest it last published not stopped (undefined,
    #: migrated away, gone with a restarted hypervisor's state): where it is and
    #: whether it runs is unknown here; nothing stopped it that the hypervisor said.
    VANISHED = "vanished"


#: The transition a resync reports for a guest found in a given power state.
TRANSITION_FOR_STATE: Mapping[PowerState, Transition] = {
    PowerState.RUNNING: Transition.STARTED,
    PowerState.PAUSED: Transition.PAUSED,
    PowerState.SHUTDOWN: Transition.STOPPED,
    PowerState.CRASHED: Transition.CRASHED,
    PowerState.SUSPENDED: Transition.SUSPENDED,
}


#: Members by wire value, for the decoder's fast path (an enum's call costs more than the
#: whole lookup); keys of exactly the JSON type, so a bool never finds a power state.
_TRANSITIONS: Mapping[str, Transition] = {member.value: member for member in Transition}
_POWER_STATES: Mapping[int, PowerState] = {int(member): member for member in PowerState}


def utcnow() -> datetime.datetime:
    """Return the current time as an aware UTC datetime."""
    return datetime.datetime.now(datetime.timezone.utc)


def format_time(moment: datetime.datetime) -> str:
    """Format an aware datetime as UTC ISO 8601 with microseconds and ``Z``."""
    # isoformat, a fraction of strftime's cost: YYYY-MM-DDTHH:MM:SS.ffffff+00:00.
    if moment.tzinfo is not datetime.timezone.utc:  # the service's own times are
        moment = moment.astimezone(datetime.timezone.utc)
    return moment.isoformat(timespec="microseconds")[:26] + "Z"


def parse_time(text: str) -> datetime.datetime:
    """Parse a UTC ISO 8601 time (``Z`` or an offset); raise ValueError if not one."""
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    moment = datetime.datetime.fromisoformat(text)
    if moment.tzinfo is None:
        raise ValueError(f"time {text!r} has no UTC offset")
    return moment.astimezone(datetime.timezone.utc)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Observed:
    """What every kind of observation carries after its own fields, given by keyword.

    Arguments:
        occurred_at: When the backend received the event (or the service noticed; aware, UTC).
        details: What else was said, JSON scalars only (libvirt's or vSphere's names kept);
            doc/source/wire.rst lists each kind's keys.

    """

    #: The event type it is published as (each kind's, set below its event class).
    event_class: ClassVar[type[Stamp]]

    occurred_at: datetime.datetime
    details: Mapping[str, Scalar] = dataclasses.field(default_factory=dict, hash=False)


@dataclasses.dataclass(frozen=True)
class Observation(Observed):
    """One guest state change, as a backend saw it; the time and details: see :class:`Observed`.

    Arguments:
        instance_uuid: The guest's UUID (nova's instance UUID).
        instance_name: The guest's name on the hypervisor.
        transition: What happened.
        power_state: The guest's power state after the change.
        reason: The backend's raw event name (libvirt ``STOPPED``, ...).
        detail: The backend's raw detail name (libvirt ``SHUTDOWN``, ...).

    """

    instance_uuid: str
    instance_name: str
    transition: Transition
    power_state: PowerState
    reason: str
    detail: str


#: The payload keys naming the guest of a guest event (lifecycle or fault), first.
GUEST_READERS: Mapping[str, FieldReader] = {
    "instance_uuid": nonempty_field,
    "instance_name": text_field,
}


StampedEvent = TypeVar("StampedEvent", bound="Stamp")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Stamp:
    """What the service adds to every observation it publishes, whatever its kind.

    Arguments:
        event_id: Unique and stable across redelivery; consumers dedupe on it.
        host: The compute host that published it.
        hypervisor: The backend name (``libvirt`` or ``esx``).
        seq: Monotonic per host: a later event of a host has a larger seq,
            whatever the kinds of the two events.
        schema_version: The payload schema version it was encoded with.
        verified: True when a :class:`~hypervisor_notifier.signing.Verifier`
            checked its signature and freshness. Not part of the payload: set
            by the receiving side only (an unsigned event is never verified).

    """

    event_id: str
    host: str
    hypervisor: str
    seq: int
    schema_version: str = SCHEMA_VERSION
    verified: bool = dataclasses.field(default=False, compare=False)

    if TYPE_CHECKING:
        # Every kind's observation has them (each kind its reason, Observed the rest);
        # declared here for the type checker only.
        occurred_at: datetime.datetime
        reason: str
        details: Mapping[str, Scalar]

    #: The ``event_type`` is this prefix and the value of the field :attr:`kind_field`.
    event_type_prefix: ClassVar[str]
    kind_field: ClassVar[str]
    #: The kind's own payload keys, in order, each with the reader that checks it.
    kind_readers: ClassVar[Mapping[str, FieldReader]]

    @property
    def event_type(self) -> str:
        """The notification's ``event_type``: ``hypervisor.instance.<x>`` or ``.host.<x>``."""
        # _value_: the member's value as stored (``.value`` is a property, slower per call).
        return self.event_type_prefix + getattr(self, self.kind_field)._value_

    @property
    def subject(self) -> str:
        """What the event is about, for order within it: a guest's UUID; empty for the host."""
        return getattr(self, "instance_uuid", "")

    @classmethod
    def from_observation(
        cls: type[StampedEvent],
        observation: Observed,
        *,
        host: str,
        hypervisor: str,
        seq: int,
        event_id: str | None = None,
        **extra: Any,
    ) -> StampedEvent:
        """Stamp an observation: host, event_id (None: a new one), seq and ``extra``."""
        # The observation's fields are its __dict__ (a dataclass without slots).
        return cls(event_id=event_id or str(uuid.uuid4()), host=host, hypervisor=hypervisor,
                   seq=seq, **extra, **observation.__dict__)  # fmt: skip

    def to_payload(self) -> dict[str, Any]:
        """Return the payload dict of the wire contract (JSON-serializable)."""
        values = self.__dict__  # the fields, without a getattr per key
        payload = {
            "schema_version": values["schema_version"],
            "event_id": values["event_id"],
            "host": values["host"],
            "hypervisor": values["hypervisor"],
        }
        for key in self.kind_readers:  # a loop: a function call per key costs more
            value = values[key]
            payload[key] = value._value_ if isinstance(value, enum.Enum) else value
        payload["details"] = dict(values["details"])
        payload["occurred_at"] = format_time(values["occurred_at"])
        payload["seq"] = values["seq"]
        return payload

    @classmethod
    def from_payload(
        cls: type[StampedEvent], payload: object, *, verified: bool = False
    ) -> StampedEvent:
        """Decode a payload dict; raise :class:`MalformedEvent` if it breaks the contract.

        Unknown keys are ignored (a newer minor version may add some); a
        different major schema version, a missing key, a wrong type or an
        unknown name (transition, power state, fault, change) is malformed;
        ``details`` may be missing (before 1.2). ``verified`` is for the
        :class:`~hypervisor_notifier.signing.Verifier` only.
        """
        payload = payload_object(payload)
        version = typed_field(payload, "schema_version", str)
        if version.split(".", 1)[0] != SCHEMA_MAJOR:
            raise MalformedEvent(f"schema_version {version!r} is not {SCHEMA_MAJOR}.x")
        return cls(
            schema_version=version,
            event_id=nonempty_field(payload, "event_id"),
            host=nonempty_field(payload, "host"),
            hypervisor=typed_field(payload, "hypervisor", str),
            **{key: read(payload, key) for key, read in cls.kind_readers.items()},
            details=details_field(payload),
            occurred_at=converted_field(payload, "occurred_at", str, parse_time),
            seq=typed_field(payload, "seq", int),
            verified=verified,
        )


@dataclasses.dataclass(frozen=True, kw_only=True)
class LifecycleEvent(Observation, Stamp):
    """One guest state change as published: ``hypervisor.instance.<transition>``.

    An :class:`Observation` stamped by the service: every field of the two
    (see their arguments) is given by keyword, and:

    Arguments:
        resync: True when a resync synthesized the event (the hypervisor did
            not push it, e.g. it happened while the service was away).

    """

    resync: bool = False

    event_type_prefix = INSTANCE_EVENT_PREFIX
    kind_field = "transition"
    kind_readers: ClassVar[Mapping[str, FieldReader]] = {
        **GUEST_READERS,
        "transition": enum_field(str, Transition),
        "power_state": enum_field(int, PowerState),
        "reason": text_field,
        "detail": text_field,
        "resync": lambda payload, key: typed_field(payload, key, bool),
    }

    @classmethod
    def from_payload(cls, payload: object, *, verified: bool = False) -> LifecycleEvent:
        """See :meth:`Stamp.from_payload`; a well-formed one is read by the fast path."""
        if type(payload) is dict:
            event = _from_json_object(cls, payload, verified)
            if event is not None:
                return event
        # Not a plain JSON object of valid fields: find and name what is wrong.
        return super().from_payload(payload, verified=verified)


#: The payload's fields, read in one call.
_PAYLOAD_FIELDS = operator.itemgetter(
    "schema_version", "event_id", "host", "hypervisor", "instance_uuid", "instance_name",
    "transition", "power_state", "reason", "detail", "details", "occurred_at", "seq", "resync",
)  # fmt: skip


def _from_json_object(
    cls: type[LifecycleEvent], payload: dict[str, Any], verified: bool
) -> LifecycleEvent | None:
    """The decoder's fast path: the event if every field is valid, of exactly its JSON type.

    None if any is not (missing, ``details`` too, another type, a subclass,
    an unknown value):
    :meth:`LifecycleEvent.from_payload`'s checks then name the fault. It
    accepts a subset of what those accept, with the same result; a consumer
    pays this, not a dozen checked lookups, for each event.
    """
    try:
        (version, event_id, host, hypervisor, instance_uuid, instance_name, name, power,
         reason, detail, details, occurred_at, seq, resync) = _PAYLOAD_FIELDS(payload)  # fmt: skip
    except KeyError:
        return None
    transition = _TRANSITIONS.get(name) if type(name) is str else None
    power_state = _POWER_STATES.get(power) if type(power) is int else None
    if (
        transition is None
        or power_state is None
        or type(version) is not str
        or version.split(".", 1)[0] != SCHEMA_MAJOR
        or not (type(event_id) is str and event_id)
        or not (type(host) is str and host)
        or not (type(instance_uuid) is str and instance_uuid)
        or type(hypervisor) is not str
        or type(instance_name) is not str
        or type(reason) is not str
        or type(detail) is not str
        or type(occurred_at) is not str
        or type(seq) is not int
        or type(resync) is not bool
        or type(details) is not dict
        or not all(type(value) in SCALAR_TYPES for value in details.values())
    ):
        return None
    try:
        moment = parse_time(occurred_at)
    except (ValueError, OverflowError):
        return None
    # The dict filled at once, in __init__'s order (a test compares it with the checked
    # path's): not 15 object.__setattr__ calls of a frozen dataclass's __init__.
    event = object.__new__(cls)
    event.__dict__.update(
        event_id=event_id, host=host, hypervisor=hypervisor, seq=seq, schema_version=version,
        verified=verified, occurred_at=moment, details=details, instance_uuid=instance_uuid,
        instance_name=instance_name, transition=transition, power_state=power_state,
        reason=reason, detail=detail, resync=resync,
    )  # fmt: skip
    return event


Observation.event_class = LifecycleEvent
