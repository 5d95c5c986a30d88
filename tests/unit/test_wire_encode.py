"""The body wire.encode writes by hand is the JSON the contract describes, for any text in it."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from hypervisor_notifier import wire
from hypervisor_notifier.signing import SIGNATURE_FIELD, Signer, Verifier, canonical
from tests.factories import make_event

KEY = b"k" * 32
#: Any text, quotes, backslashes, control and non-ASCII characters included.
TEXT = st.text(min_size=1, max_size=30)


def as_dicts(body: bytes) -> dict:
    """The notification inside the envelope, decoded the way any JSON consumer decodes it."""
    envelope = json.loads(body)
    assert list(envelope) == ["oslo.version", "oslo.message"]
    assert envelope["oslo.version"] == wire.OSLO_VERSION
    return json.loads(envelope["oslo.message"])


@given(host=TEXT, name=TEXT, event_id=TEXT, details=st.dictionaries(TEXT, TEXT, max_size=3))
def test_the_body_is_the_notification_of_the_payload_whatever_its_text(
    host, name, event_id, details
):
    event = make_event(host=host, instance_name=name, event_id=event_id, details=details)

    notification = as_dicts(wire.encode(event))

    assert notification == {
        "message_id": event_id,
        "_unique_id": event_id,
        "publisher_id": "hypervisor-notifier." + host,
        "event_type": event.event_type,
        "priority": "INFO",
        "payload": event.to_payload(),
        "timestamp": event.to_payload()["occurred_at"][:-1].replace("T", " "),
    }
    assert wire.decode(wire.encode(event)) == event


@given(host=TEXT, name=TEXT, details=st.dictionaries(TEXT, TEXT, max_size=3))
def test_a_signed_body_carries_a_signature_over_the_payload_that_verifies(host, name, details):
    event = make_event(host=host, instance_name=name, details=details)

    body = wire.encode(event, Signer("current", KEY))

    payload = as_dicts(body)["payload"]
    signature = payload.pop(SIGNATURE_FIELD)
    assert payload == event.to_payload()
    assert signature == Signer("current", KEY).signature(canonical(payload))
    decoded = wire.decode(body, Verifier({"current": KEY}))
    assert decoded.verified and decoded == event


def test_the_payload_in_the_body_is_its_canonical_text_the_signed_one():
    event = make_event(host='a "quoted" host')

    text = json.loads(wire.encode(event))["oslo.message"]

    assert canonical(event.to_payload()).decode() in text
