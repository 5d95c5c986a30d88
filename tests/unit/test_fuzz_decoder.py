"""The decoder of incoming messages, fuzzed: only MalformedEvent escapes.

What a subscriber does with a body off the bus: ``wire.decode`` (size,
JSON, envelope), ``LifecycleEvent.from_payload`` and, with a key, the
signature and freshness checks. Every input is decoded twice, without and
with a verifier, and must return or raise MalformedEvent (how fast is for
benchmarks, not asserted here). 100,000 inputs in all, each test asserting
its own count:

- raw bytes, and valid signed bodies cut, spliced and overwritten;
- valid signed envelopes whose payload and envelope fields are replaced,
  removed or added: the signature then fails;
- the same hostile payloads *validly signed* (a holder of the key, or a
  buggy publisher), so that decoding past the signature check is reached;
- replaced signature objects;
- payload values generated freely as any JSON (the costliest to draw).

Hypothesis draws inputs in batches (``BATCH`` per example): its cost per
example, not the decoder, is what takes the time.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hypervisor_notifier import events, wire
from hypervisor_notifier.events import MalformedEvent
from hypervisor_notifier.signing import Signer, Verifier
from tests.factories import make_event

KEY = b"fuzz-key-of-at-least-thirty-two-bytes"
SIGNER = Signer("1", KEY)
BATCH = 20


def deep(depth: int) -> Any:
    value: Any = "bottom"
    for _ in range(depth):
        value = [value]
    return value


#: Values chosen to confuse: wrong types, edges of ranges, odd text, near-valid times.
HOSTILE = [
    None, True, False, 0, 1, -1, 3, 4, 7, 8, 2**31, 2**63, -(2**63), 2**64, 10**40,
    0.0, -0.0, 1.5, 1e308, float("inf"), float("-inf"), float("nan"),
    "", " ", "stopped", "STOPPED", "started", "rebooted", "shutting_down", "1", "1.1", "1.",
    "2.0", "x.y", "\x00", "\ud800", "é", "\U0001d518", "a" * 5000, "-1", "libvirt",
    "2026-01-01T00:00:00Z", "2026-01-01T00:00:00", "2026-01-01", "2026-13-01T00:00:00Z",
    "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59.999999-01:00", "now",
    "1970-01-01T00:00:00.000000Z", "2026-02-30T00:00:00Z", "hmac-sha256", "0" * 64,
    [], {}, [None], {"a": 1}, deep(3), deep(100), ["stopped"], {"value": "0" * 64},
    {"key_id": "1", "alg": "hmac-sha256", "value": "0" * 64},
    {"key_id": "1", "alg": "hmac-sha256", "value": "\u0080" * 64},
    {"key_id": 1, "alg": "hmac-sha256", "value": "0" * 64},
    {"key_id": "1", "alg": ["hmac-sha256"]},
]  # fmt: skip
PAYLOAD_KEYS = [*make_event().to_payload(), "signature", "", "extra"]

hostile_values = st.sampled_from(HOSTILE)
any_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=4,
)


def changes_of(values: st.SearchStrategy[Any]) -> st.SearchStrategy[list[tuple[str, str, Any]]]:
    """Up to four payload edits: ("set", key, value) or ("delete", key, _)."""
    edit = st.tuples(st.sampled_from(["set", "delete"]), st.sampled_from(PAYLOAD_KEYS), values)
    return st.lists(edit, min_size=1, max_size=4)


def fuzz_settings(batches: int) -> settings:
    return settings(
        max_examples=batches,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


class Decoder:
    """Decodes inputs as subscribers without and with a key do; counts them."""

    def __init__(self) -> None:
        self.inputs = 0
        #: Inputs that passed every check of the verifier: how deep the fuzzing reached.
        self.verified = 0
        self.verifier = Verifier({"1": KEY})

    def __call__(self, body: bytes | str) -> None:
        self.inputs += 1
        for check in (None, self.verifier):
            try:
                event = wire.decode(body, check)
            except MalformedEvent:
                pass
            else:
                assert event.verified is (check is not None)
                self.verified += event.verified


def edited(changes: list[tuple[str, str, Any]], *, sign: str) -> dict[str, Any]:
    """A fresh event's payload, with ``changes``; signed ``before`` or ``after`` them."""
    payload = make_event().to_payload()
    if sign == "before":
        SIGNER.sign(payload)
    for action, key, value in changes:
        if action == "delete":
            payload.pop(key, None)
        else:
            payload[key] = value
    if sign == "after":
        payload.pop("signature", None)
        SIGNER.sign(payload)  # MalformedEvent if it cannot be encoded canonically
    return payload


def envelope(payload: dict[str, Any], event_type: str | None = None, version: Any = "2.0") -> str:
    inner = {
        "event_type": event_type or f"{events.INSTANCE_EVENT_PREFIX}{payload.get('transition')}",
        "payload": payload,
    }
    return json.dumps({"oslo.version": version, "oslo.message": json.dumps(inner)})


def run_batches(batches: int, strategy: st.SearchStrategy[Any], feed: Callable) -> Decoder:
    decoder = Decoder()

    @fuzz_settings(batches)
    @given(st.lists(strategy, min_size=BATCH, max_size=BATCH))
    def fuzz(items: list[Any]) -> None:
        for item in items:
            feed(decoder, item)

    fuzz()
    return decoder


def test_raw_bytes_and_cut_spliced_or_overwritten_bodies():
    body = wire.encode(make_event(), SIGNER)
    splices = st.tuples(
        st.integers(0, len(body)), st.integers(0, len(body)), st.binary(max_size=16)
    ).map(lambda cut: body[: cut[0]] + cut[2] + body[cut[1] :])
    nested = st.integers(1, 40_000).map(lambda depth: b"[" * depth + b"]" * depth)
    strategy = st.binary(max_size=512) | splices | splices.map(lambda b: b.decode("latin-1"))
    strategy |= nested

    assert run_batches(1_500, strategy, lambda decode, data: decode(data)).inputs >= 30_000


def test_valid_envelopes_with_edited_fields_fail_the_signature():
    versions = st.sampled_from(["2.0", "2.9", "1.0", "2", 2, None])
    event_types = st.none() | st.sampled_from(["", "hypervisor.instance.", "compute.instance"])

    def feed(decode: Decoder, item: tuple) -> None:
        changes, event_type, version = item
        body = envelope(edited(changes, sign="before"), event_type, version)
        decode(body)
        decode(json.loads(body)["oslo.message"])  # the bare notification form

    strategy = st.tuples(changes_of(hostile_values), event_types, versions)
    assert run_batches(625, strategy, feed).inputs >= 25_000


def test_hostile_payloads_signed_with_the_key_reach_the_field_checks():
    def feed(decode: Decoder, changes: list) -> None:
        try:
            payload = edited(changes, sign="after")
        except MalformedEvent:  # not canonically encodable: nobody can sign it
            return decode(envelope(edited(changes, sign="before")))
        decode(envelope(payload))

    decoder = run_batches(1_250, changes_of(hostile_values), feed)
    assert decoder.inputs >= 25_000
    assert decoder.verified > 1_000, "the edits should leave some events valid"


def test_replaced_signature_objects():
    signatures = hostile_values | st.fixed_dictionaries(
        {}, optional={name: hostile_values for name in ("key_id", "alg", "value")}
    )

    def feed(decode: Decoder, signature: Any) -> None:
        payload = make_event().to_payload()
        payload["signature"] = signature
        decode(envelope(payload))

    assert run_batches(750, signatures, feed).inputs >= 15_000


def test_freely_generated_json_values():
    def feed(decode: Decoder, changes: list) -> None:
        try:
            decode(envelope(edited(changes, sign="after")))
        except MalformedEvent:
            decode(envelope(edited(changes, sign="before")))

    assert run_batches(250, changes_of(any_json), feed).inputs >= 5_000
