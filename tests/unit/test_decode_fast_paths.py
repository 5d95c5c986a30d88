"""The decoder's fast paths give what the checked paths give, for any input.

``LifecycleEvent.from_payload`` takes a fast path for a plain ``dict``
(the checked path runs for any other mapping, and names the fault);
``wire._json`` is ``json.loads`` without its per-call overhead; an envelope
exactly as ``wire.encode`` writes it is unwrapped without decoding the
outer object (a ``str`` body, as py-amqp hands over with a content
encoding, always is decoded whole). Each is
compared with the path it shortcuts on valid and hostile inputs: the same
event, or the same refusal.
"""

from __future__ import annotations

import json
import types
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hypervisor_notifier import wire
from hypervisor_notifier.events import LifecycleEvent, MalformedEvent, PowerState, Transition
from tests.factories import make_event

FIELDS = list(make_event().to_payload())

#: Values of every JSON type, and Python values a JSON decoder never produces.
HOSTILE: list[Any] = [
    None, True, False, 0, 1, -1, 2, 3, 4, 6, 7, 8, 2**64, 1.0, 4.0, float("nan"),
    *[t.value for t in Transition], "STOPPED", *Transition, *PowerState,
    "", "1", "1.0", "1.9.9", "2.0", "x", "1.", ".1", "\x00", "\ud800",
    "2026-01-01T00:00:00.000000Z", "2026-01-01T00:00:00Z", "2026-01-01T00:00:00+02:00",
    "2026-01-01T00:00:00", "2026-01-01Z", "2026-02-30T00:00:00Z",
    "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59.999999-01:00",
    [], [1], {}, {"a": 1},
]  # fmt: skip
VALUES = st.sampled_from(HOSTILE) | st.text(max_size=8) | st.integers()


class Text(str):
    """A str subclass: what json never produces; the fast path must leave it to the checks."""


def checked(payload: dict[str, Any]) -> LifecycleEvent | str:
    """The checked path's result (a read-only mapping is not a dict), or its refusal."""
    try:
        return LifecycleEvent.from_payload(types.MappingProxyType(payload))
    except MalformedEvent as exc:
        return f"MalformedEvent: {exc}"


def fast(payload: dict[str, Any]) -> LifecycleEvent | str:
    try:
        return LifecycleEvent.from_payload(payload)
    except MalformedEvent as exc:
        return f"MalformedEvent: {exc}"


def same(payload: dict[str, Any]) -> None:
    """The fast path's result is the checked path's, with the same types field by field."""
    result, expected = fast(payload), checked(payload)
    assert repr(result) == repr(expected)  # repr: a NaN is not equal to itself
    if isinstance(result, LifecycleEvent):
        # The fast path fills the instance's dict itself: the same keys, in the same order.
        assert repr(vars(result)) == repr(vars(expected))
        # == does not see an int where a PowerState belongs.
        assert [type(getattr(result, f)) for f in FIELDS] == [
            type(getattr(expected, f)) for f in FIELDS
        ]


@pytest.mark.parametrize("key", FIELDS)
def test_the_fast_path_decodes_and_refuses_each_field_exactly_as_the_checked_path(key):
    same(make_event().to_payload())
    for value in HOSTILE:
        payload = make_event().to_payload()
        payload[key] = value
        same(payload)
    del payload[key]
    same(payload)


@settings(max_examples=300)
@given(
    changes=st.dictionaries(st.sampled_from(FIELDS), VALUES, min_size=1, max_size=3),
    removed=st.sets(st.sampled_from(FIELDS), max_size=2),
)
def test_the_fast_path_agrees_with_the_checked_path_on_several_faults(changes, removed):
    payload = make_event().to_payload()
    payload.update(changes)
    for key in removed:
        payload.pop(key, None)

    same(payload)


@pytest.mark.parametrize("key", ["event_id", "host", "transition", "occurred_at"])
def test_a_str_subclass_goes_through_the_checks_and_decodes_the_same(key):
    payload = make_event().to_payload()
    payload[key] = Text(payload[key])

    assert fast(payload) == checked(payload) == LifecycleEvent.from_payload(dict(payload))


def test_a_bool_is_never_a_power_state_or_a_seq_on_the_fast_path():
    # True == 1 == PowerState.RUNNING as dict keys: the fast path must not find it.
    for key in ("power_state", "seq"):
        payload = make_event().to_payload()
        payload[key] = True
        with pytest.raises(MalformedEvent, match=key):
            LifecycleEvent.from_payload(payload)


JSON_TEXTS = st.one_of(
    st.sampled_from(
        [
            '{"a": 1}',
            ' {"a": 1}',
            '{"a": 1} ',
            '{"a": 1}\n',
            '{"a": 1} x',
            '{"a": 1}{"b": 2}',
            "{",
            "{}",
            "[1]",
            '"s"',
            "1",
            "",
            "\ufeff{}",
            '{"a": "\\ud800"}',
            '{"a": NaN}',
        ]
    ),
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=5),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner),
        max_leaves=6,
    ).map(json.dumps),
    st.text(max_size=12),
)
ENCODINGS = st.sampled_from(
    [None, "utf-8", "utf-8-sig", "utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-le"]
)


def loads(function: Any, value: object) -> object:
    try:
        return ("value", function(value))
    except MalformedEvent:
        return "refused"
    except (ValueError, TypeError, RecursionError):
        return "refused"


@settings(max_examples=600)
@given(text=JSON_TEXTS, encoding=ENCODINGS)
def test_the_json_reader_accepts_and_refuses_exactly_what_json_loads_does(text, encoding):
    value: object = text
    if encoding is not None:
        value = text.encode(encoding, "surrogatepass")

    ours = loads(lambda v: wire._json(v, "body"), value)

    # repr: a NaN is not equal to itself.
    assert repr(ours) == repr(loads(json.loads, value))


@pytest.mark.parametrize("value", [None, 5, ["{}"], b"\x00{", bytearray(b'{"a": 1}')])
def test_the_json_reader_refuses_what_json_loads_refuses_naming_the_part(value):
    try:
        expected = ("value", json.loads(value))  # type: ignore[arg-type]
    except (ValueError, TypeError):
        with pytest.raises(MalformedEvent, match=r"^oslo\.message is not JSON"):
            wire._json(value, "oslo.message")
    else:
        assert wire._json(value, "oslo.message") == expected[1]


def unwrapped(body: bytes | str) -> object:
    try:
        return wire._notification(body)
    except MalformedEvent as exc:
        return f"MalformedEvent: {exc}"


ENVELOPE = wire.encode(make_event())
HEAD = wire._ENVELOPE_HEAD.decode()


@settings(max_examples=400)
@given(
    message=st.text(max_size=12) | st.sampled_from(['{"event_type": "x"}', '{"payload": 1}']),
    tail=st.sampled_from(['"}', '" }', '"} ', '", "oslo.message": "{}"}', '"}"}', '\\"}', "}"]),
    head=st.sampled_from([HEAD, HEAD.replace("2.0", "3.0"), HEAD.replace(": ", ":"), ""]),
)
def test_an_envelope_is_unwrapped_as_decoding_it_whole_would(message, tail, head):
    escaped = json.dumps(message)[1:-1]
    text = head + escaped + tail
    body = text.encode("utf-8", "surrogatepass")

    # The str body is never taken for the encoder's envelope: decoded whole.
    assert unwrapped(body) == unwrapped(text)


def test_the_encoders_envelope_is_unwrapped_to_its_event_type_and_payload():
    event = make_event()

    assert wire._as_encoded(ENVELOPE) is not None
    assert unwrapped(wire.encode(event)) == (event.event_type, event.to_payload())
    assert unwrapped(ENVELOPE + b" ") == unwrapped(ENVELOPE.decode() + " ")
    assert wire._as_encoded(ENVELOPE + b" ") is None
    assert wire._as_encoded(ENVELOPE.replace(b"{", b"\xff", 1)) is None
