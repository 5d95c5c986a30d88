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


#: Fields whose value the payload holds in another form than the event (``occurred_at``
#: too: written by :func:`canonical_text_and_time`, which hands its text on).
_WRITERS: dict[str, Writer] = {"details": _details}


class _Layout:
    """One kind's template: its payload keys sorted, and the writer of each but ``occurred_at``."""

    def __init__(self, kind: type[Stamp]) -> None:
        keys = sorted({*_COMMON_KEYS, *kind.kind_readers})
        self.template = "{" + ",".join(f"{_quoted(key)}:%s" for key in keys) + "}"
        self.occurred_at = keys.index("occurred_at")
        keys.remove("occurred_at")
        self.fields = tuple((key, _WRITERS.get(key, _scalar)) for key in keys)


_LAYOUTS: dict[type, _Layout] = {}


def canonical_text(event: Stamp) -> str:
    """``signing.canonical(event.to_payload())``, as text, written without the dict."""
    return canonical_text_and_time(event)[0]


def canonical_text_and_time(event: Stamp) -> tuple[str, str]:
    """:func:`canonical_text`, and the ``occurred_at`` written in it (formatted once).

    The encoder writes the same time into the envelope.
    """
    layout = _LAYOUTS.get(type(event))
    if layout is None:
        layout = _LAYOUTS[type(event)] = _Layout(type(event))
    values = event.__dict__  # the fields, without a getattr per key
    moment = format_time(values["occurred_at"])
    parts = [write(values[key]) for key, write in layout.fields]
    parts.insert(layout.occurred_at, f'"{moment}"')
    return layout.template % tuple(parts), moment
