"""Guest lifecycle events and their versioned payload.

This module is part of the public wire contract (doc/source/wire.rst).
It imports nothing hypervisor- or broker-specific, so the consumer library
can use it on hosts without libvirt-python or pyVmomi.

Two types flow through the service:

- :class:`Observation` is what a backend saw: one guest changed state.
- :class:`LifecycleEvent` is what goes on the wire: an observation stamped by
  the service with its host, a stable ``event_id`` and a per-host ``seq``.
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
import operator
import uuid
from collections.abc import Mapping
from typing import Any

#: Payload schema version. The major number changes only with an
#: incompatible change; decoders accept any minor version of their major.
#: 1.1 added the optional ``signature`` field (``signing.py``).
SCHEMA_VERSION = "1.1"
SCHEMA_MAJOR = "1"

_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


class MalformedEvent(ValueError):
    """A payload does not follow the wire contract; the text says why."""


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
    ``rebooted``): a consumer that only knows nova's names can ignore those.
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
    return moment.astimezone(datetime.timezone.utc).strftime(_TIME_FORMAT)


def parse_time(text: str) -> datetime.datetime:
    """Parse a UTC ISO 8601 time (``Z`` or an offset); raise ValueError if not one."""
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    moment = datetime.datetime.fromisoformat(text)
    if moment.tzinfo is None:
        raise ValueError(f"time {text!r} has no UTC offset")
    return moment.astimezone(datetime.timezone.utc)


@dataclasses.dataclass(frozen=True)
class Observation:
    """One guest state change, as a backend saw it.

    Arguments:
        instance_uuid: The guest's UUID (nova's instance UUID).
        instance_name: The guest's name on the hypervisor.
        transition: What happened.
        power_state: The guest's power state after the change.
        reason: The backend's raw event name (libvirt ``STOPPED``, ...).
        detail: The backend's raw detail name (libvirt ``SHUTDOWN``, ...).
        occurred_at: When the backend received the event (aware, UTC).

    """

    instance_uuid: str
    instance_name: str
    transition: Transition
    power_state: PowerState
    reason: str
    detail: str
    occurred_at: datetime.datetime


@dataclasses.dataclass(frozen=True, kw_only=True)
class LifecycleEvent(Observation):
    """One guest state change as published: the payload of the wire contract.

    An :class:`Observation` (its fields first) stamped by the service; every
    field is given by keyword.

    Arguments:
        event_id: Unique and stable across redelivery; consumers dedupe on it.
        host: The compute host that published it.
        hypervisor: The backend name (``libvirt`` or ``esx``).
        instance_uuid: The guest's UUID (nova's instance UUID).
        instance_name: The guest's name on the hypervisor.
        transition: What happened.
        power_state: The guest's power state after the change.
        reason: The backend's raw event name.
        detail: The backend's raw detail name.
        occurred_at: When the backend received the event (aware, UTC).
        seq: Monotonic per host: a later event of a host has a larger seq.
        resync: True when a resync synthesized the event (the hypervisor did
            not push it, e.g. it happened while the service was away).
        schema_version: The payload schema version it was encoded with.
        verified: True when a :class:`~hypervisor_notifier.signing.Verifier`
            checked its signature and freshness. Not part of the payload: set
            by the receiving side only (an unsigned event is never verified).

    """

    event_id: str
    host: str
    hypervisor: str
    seq: int
    resync: bool = False
    schema_version: str = SCHEMA_VERSION
    verified: bool = dataclasses.field(default=False, compare=False)

    @classmethod
    def from_observation(
        cls,
        observation: Observation,
        *,
        host: str,
        hypervisor: str,
        seq: int,
        resync: bool = False,
    ) -> LifecycleEvent:
        """Stamp an observation with its host, a new event_id and its seq."""
        observed = {f.name: getattr(observation, f.name) for f in dataclasses.fields(Observation)}
        return cls(
            event_id=str(uuid.uuid4()),
            host=host,
            hypervisor=hypervisor,
            seq=seq,
            resync=resync,
            **observed,
        )

    def to_payload(self) -> dict[str, Any]:
        """Return the payload dict of the wire contract (JSON-serializable)."""
        return {
            "schema_version": self.schema_version,
            "event_id": self.event_id,
            "host": self.host,
            "hypervisor": self.hypervisor,
            "instance_uuid": self.instance_uuid,
            "instance_name": self.instance_name,
            "transition": self.transition.value,
            "power_state": int(self.power_state),
            "reason": self.reason,
            "detail": self.detail,
            "occurred_at": format_time(self.occurred_at),
            "seq": self.seq,
            "resync": self.resync,
        }

    @classmethod
    def from_payload(cls, payload: object, *, verified: bool = False) -> LifecycleEvent:
        """Decode a payload dict; raise :class:`MalformedEvent` if it breaks the contract.

        Unknown keys are ignored (a newer minor version may add some); a
        different major schema version, a missing key, a wrong type or an
        unknown transition or power state is malformed. ``verified`` is for
        the :class:`~hypervisor_notifier.signing.Verifier` only.
        """
        if type(payload) is dict:
            event = _from_json_object(cls, payload, verified)
            if event is not None:
                return event
        # Not a plain JSON object of valid fields: find and name what is wrong.
        payload = payload_object(payload)
        version = _field(payload, "schema_version", str)
        if version.split(".", 1)[0] != SCHEMA_MAJOR:
            raise MalformedEvent(f"schema_version {version!r} is not {SCHEMA_MAJOR}.x")
        transition = _convert(payload, "transition", str, Transition)
        power_state = _convert(payload, "power_state", int, PowerState)
        occurred_at = _convert(payload, "occurred_at", str, parse_time)
        return cls(
            event_id=_nonempty(payload, "event_id"),
            host=_nonempty(payload, "host"),
            hypervisor=_field(payload, "hypervisor", str),
            instance_uuid=_nonempty(payload, "instance_uuid"),
            instance_name=_field(payload, "instance_name", str),
            transition=transition,
            power_state=power_state,
            reason=_field(payload, "reason", str),
            detail=_field(payload, "detail", str),
            occurred_at=occurred_at,
            seq=_field(payload, "seq", int),
            resync=_field(payload, "resync", bool),
            schema_version=version,
            verified=verified,
        )


#: The payload's fields, read in one call.
_PAYLOAD_FIELDS = operator.itemgetter(
    "schema_version", "event_id", "host", "hypervisor", "instance_uuid", "instance_name",
    "transition", "power_state", "reason", "detail", "occurred_at", "seq", "resync",
)  # fmt: skip


def _from_json_object(
    cls: type[LifecycleEvent], payload: dict[str, Any], verified: bool
) -> LifecycleEvent | None:
    """The decoder's fast path: the event if every field is valid, of exactly its JSON type.

    None if any is not (missing, another type, a subclass, an unknown value):
    :meth:`LifecycleEvent.from_payload`'s checks then name the fault. It
    accepts a subset of what those accept, with the same result; a consumer
    pays this, not a dozen checked lookups, for each event.
    """
    try:
        (version, event_id, host, hypervisor, instance_uuid, instance_name, name, power,
         reason, detail, occurred_at, seq, resync) = _PAYLOAD_FIELDS(payload)  # fmt: skip
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
    ):
        return None
    try:
        moment = parse_time(occurred_at)
    except (ValueError, OverflowError):
        return None
    return cls(
        event_id=event_id,
        host=host,
        hypervisor=hypervisor,
        instance_uuid=instance_uuid,
        instance_name=instance_name,
        transition=transition,
        power_state=power_state,
        reason=reason,
        detail=detail,
        occurred_at=moment,
        seq=seq,
        resync=resync,
        schema_version=version,
        verified=verified,
    )


def payload_object(payload: object) -> Mapping[str, Any]:
    """Return ``payload`` if it is a JSON object; raise :class:`MalformedEvent` if not."""
    if not isinstance(payload, Mapping):
        raise MalformedEvent(f"payload is a {type(payload).__name__}, not an object")
    return payload


def _field(payload: Mapping[str, Any], key: str, kind: type) -> Any:
    """Return ``payload[key]`` if it is of ``kind``; bool never passes for int."""
    try:
        value = payload[key]
    except KeyError:
        raise MalformedEvent(f"payload has no {key!r}") from None
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise MalformedEvent(f"payload {key!r} is {type(value).__name__}, not {kind.__name__}")
    return value


def _convert(payload: Mapping[str, Any], key: str, kind: type, convert: Any) -> Any:
    """Return ``convert(payload[key])``; a value it refuses is malformed, named by its key."""
    value = _field(payload, key, kind)
    try:
        return convert(value)
    # OverflowError: a time at the edge of datetime's range with an offset.
    except (ValueError, OverflowError) as exc:
        raise MalformedEvent(f"payload {key!r} is invalid: {exc}") from None


def _nonempty(payload: Mapping[str, Any], key: str) -> str:
    value: str = _field(payload, key, str)
    if not value:
        raise MalformedEvent(f"payload {key!r} is empty")
    return value
