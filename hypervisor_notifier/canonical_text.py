"""An event's payload in canonical form, written straight from its fields.

The contract is :func:`hypervisor_notifier.signing.canonical` of the
event's ``to_payload()``: JSON, keys sorted, compact, ASCII only. That text
is what the publisher stores, sends and signs, once per event, on the path
between the hypervisor's callback and the outbox commit. Building the
payload dict and having the JSON encoder sort it cost more than the event's
signature; here each kind's keys are sorted once, into a template, and each
field is written by the encoder of its type. A property test holds the two
equal for every kind of event and any field values.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from json.encoder import encode_basestring_ascii as _quoted
from typing import Any

from hypervisor_notifier.events import Stamp, format_time
from hypervisor_notifier.signing import CANONICAL_ENCODER

#: The payload keys every kind has beside its own (``Stamp.to_payload``).
_COMMON_KEYS = (
    "schema_version", "event_id", "host", "hypervisor", "details", "occurred_at", "seq",
)  # fmt: skip

Writer = Callable[[Any], str]


def _scalar(value: Any) -> str:
    """A field's JSON as the canonical encoder writes it (an enum as its value).

    The common types are written here; the rest (floats, None) by the encoder.
    """
    kind = type(value)
    if kind is str:
        return _quoted(value)
    if kind is int:
        return int.__repr__(value)
    if kind is bool:
        return "true" if value else "false"
    if isinstance(value, enum.Enum):
        return _scalar(value._value_)
    return CANONICAL_ENCODER.encode(value)


def _details(details: Mapping[str, Any]) -> str:
    return CANONICAL_ENCODER.encode(dict(details)) if details else "{}"


def _occurred_at(moment: Any) -> str:
    return '"' + format_time(moment) + '"'


#: Fields whose value the payload holds in another form than the event.
_WRITERS: dict[str, Writer] = {"details": _details, "occurred_at": _occurred_at}


class _Layout:
    """One kind's template: its payload keys sorted, and the writer of each."""

    def __init__(self, kind: type[Stamp]) -> None:
        keys = sorted({*_COMMON_KEYS, *kind.kind_readers})
        self.template = "{" + ",".join(f"{_quoted(key)}:%s" for key in keys) + "}"
        self.fields = tuple((key, _WRITERS.get(key, _scalar)) for key in keys)


_LAYOUTS: dict[type, _Layout] = {}


def canonical_text(event: Stamp) -> str:
    """``signing.canonical(event.to_payload())``, as text, written without the dict."""
    layout = _LAYOUTS.get(type(event))
    if layout is None:
        layout = _LAYOUTS[type(event)] = _Layout(type(event))
    values = event.__dict__  # the fields, without a getattr per key
    return layout.template % tuple([write(values[key]) for key, write in layout.fields])
