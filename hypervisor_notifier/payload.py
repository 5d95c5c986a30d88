"""Reading a payload's fields, checked: the decoders' common vocabulary.

Part of the public wire contract (doc/source/wire.rst): every kind of event
reads its payload with these, so a malformed payload is refused with the
same words whatever its kind. Imports nothing else of the package.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from typing import Any


class MalformedEvent(ValueError):
    """A payload does not follow the wire contract; the text says why."""


#: Reads one key of a payload, checked; raises :class:`MalformedEvent`.
FieldReader = Callable[[Mapping[str, Any], str], Any]

#: A value of a ``details`` object: JSON scalars only, so every language reads them alike.
Scalar = str | int | float | bool | None
#: The types of a :data:`Scalar`, to check a value against.
SCALAR_TYPES = (str, int, float, bool, type(None))


def payload_object(payload: object) -> Mapping[str, Any]:
    """Return ``payload`` if it is a JSON object; raise :class:`MalformedEvent` if not."""
    if not isinstance(payload, Mapping):
        raise MalformedEvent(f"payload is a {type(payload).__name__}, not an object")
    return payload


def typed_field(payload: Mapping[str, Any], key: str, kind: type) -> Any:
    """Return ``payload[key]`` if it is of ``kind``; bool never passes for int."""
    try:
        value = payload[key]
    except KeyError:
        raise MalformedEvent(f"payload has no {key!r}") from None
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise MalformedEvent(f"payload {key!r} is {type(value).__name__}, not {kind.__name__}")
    return value


def converted_field(payload: Mapping[str, Any], key: str, kind: type, convert: Any) -> Any:
    """Return ``convert(payload[key])``; a value it refuses is malformed, named by its key."""
    value = typed_field(payload, key, kind)
    try:
        return convert(value)
    # OverflowError: a time at the edge of datetime's range with an offset.
    except (ValueError, OverflowError) as exc:
        raise MalformedEvent(f"payload {key!r} is invalid: {exc}") from None


def text_field(payload: Mapping[str, Any], key: str) -> str:
    """``payload[key]``, a string; raise :class:`MalformedEvent` if not one."""
    return typed_field(payload, key, str)  # type: ignore[no-any-return]


def enum_field(kind: type, names: type[enum.Enum]) -> FieldReader:
    """A reader of a key whose value (of ``kind``) must be one of ``names``."""
    return lambda payload, key: converted_field(payload, key, kind, names)


def nonempty_field(payload: Mapping[str, Any], key: str) -> str:
    """``payload[key]``, a non-empty string; raise :class:`MalformedEvent` if not one."""
    value: str = typed_field(payload, key, str)
    if not value:
        raise MalformedEvent(f"payload {key!r} is empty")
    return value


def details_field(payload: Mapping[str, Any]) -> Mapping[str, Scalar]:
    """The optional ``details`` object (absent before 1.2): string keys, JSON scalar values."""
    details = payload.get("details", {})
    if not isinstance(details, Mapping):
        raise MalformedEvent(f"payload 'details' is {type(details).__name__}, not object")
    for key, value in details.items():
        if not isinstance(value, SCALAR_TYPES):
            raise MalformedEvent(
                f"payload 'details' {key!r} is {type(value).__name__}, not scalar"
            )
    return dict(details)
