"""Names, queue arguments and the messagingv2 envelope: the wire contract (doc/source/wire.rst)."""

from __future__ import annotations

import dataclasses
import datetime
import json
import re
import types
import warnings
from typing import Any

import pytest
from kombu.transport.virtual.exchange import TopicExchange

from hypervisor_notifier import wire
from hypervisor_notifier.events import LifecycleEvent, MalformedEvent, PowerState, Transition
from tests.factories import make_event

UTC = datetime.timezone.utc
PLUS_TWO = datetime.timezone(datetime.timedelta(hours=2))
TOPIC = "hypervisor_events"


def notification(payload: dict[str, Any], event_type: str | None = None) -> dict[str, Any]:
    """An oslo.messaging notification around ``payload``, written from the contract."""
    return {
        "message_id": "5d0f3c2a-8b7e-4e61-9a0d-2c4b6e8f1a3d",
        "publisher_id": "hypervisor-notifier.compute1.example.org",
        "event_type": event_type or f"hypervisor.instance.{payload['transition']}",
        "priority": "INFO",
        "payload": payload,
        "timestamp": "2024-02-29 23:59:58.123456",
    }


def envelope(inner: Any, version: Any = "2.0") -> bytes:
    """The messagingv2 envelope around ``inner``."""
    return json.dumps({"oslo.version": version, "oslo.message": json.dumps(inner)}).encode()


def raw(outer: Any) -> bytes:
    """``outer`` as a JSON body, as it is: for envelopes that break the rules."""
    return json.dumps(outer).encode()


def inner_of(body: bytes) -> dict[str, Any]:
    return json.loads(json.loads(body)["oslo.message"])


def topic_matches(binding: str, routing_key: str) -> bool:
    """Whether a topic exchange routes ``routing_key`` to a queue bound with ``binding``."""
    # kombu's in-memory broker implements AMQP topic matching ('*' one word, '#' any).
    return re.match(TopicExchange(None).key_to_pattern(binding), routing_key) is not None


# -- encode -------------------------------------------------------------------------


def test_encode_wraps_a_json_notification_in_the_messagingv2_envelope():
    outer = json.loads(wire.encode(make_event()))

    assert set(outer) == {"oslo.version", "oslo.message"}
    assert outer["oslo.version"] == "2.0"
    assert isinstance(outer["oslo.message"], str)
    assert isinstance(json.loads(outer["oslo.message"]), dict)


def test_encoded_notification_names_the_publisher_event_type_and_priority():
    event = make_event(host="compute1.example.org", transition=Transition.SHUTTING_DOWN)

    inner = inner_of(wire.encode(event))

    assert inner["publisher_id"] == "hypervisor-notifier.compute1.example.org"
    assert inner["event_type"] == "hypervisor.instance.shutting_down"
    # oslo.messaging's Notifier sends it upper case; listeners compare lower case.
    assert inner["priority"].lower() == "info"
    assert isinstance(inner["message_id"], str)
    assert inner["message_id"]
    assert inner["payload"] == event.to_payload()


@pytest.mark.parametrize(
    "occurred_at",
    [
        datetime.datetime(2024, 2, 29, 23, 59, 58, 123456, tzinfo=UTC),
        datetime.datetime(2024, 3, 1, 1, 59, 58, 123456, tzinfo=PLUS_TWO),
    ],
    ids=["utc", "plus-two-hours"],
)
def test_encoded_timestamp_is_oslo_format_in_utc(occurred_at):
    inner = inner_of(wire.encode(make_event(occurred_at=occurred_at)))

    # oslo.messaging's format: str() of a naive UTC datetime.
    timestamp = datetime.datetime.strptime(inner["timestamp"], "%Y-%m-%d %H:%M:%S.%f")
    assert timestamp == datetime.datetime(2024, 2, 29, 23, 59, 58, 123456)


# -- decode ---------------------------------------------------------------------------


@pytest.mark.parametrize("transition", list(Transition))
def test_decode_inverts_encode(transition):
    event = make_event(host="compute1.example.org", transition=transition, resync=True)

    assert wire.decode(wire.encode(event)) == event


def test_decode_accepts_a_str_body():
    # py-amqp hands over str bodies when the message has a content_encoding.
    event = make_event()

    assert wire.decode(wire.encode(event).decode()) == event


def test_decode_reads_a_body_written_to_the_contract(wire_payload):
    event = wire.decode(envelope(notification(wire_payload)))

    assert event == LifecycleEvent.from_payload(wire_payload)
    assert event.transition is Transition.STOPPED
    assert event.power_state is PowerState.SHUTDOWN


def test_decode_accepts_a_bare_notification(wire_payload):
    # oslo.messaging's older "messaging" driver sends the notification without envelope.
    body = raw(notification(wire_payload))

    assert wire.decode(body) == LifecycleEvent.from_payload(wire_payload)


def test_decode_accepts_a_body_of_exactly_max_body_bytes():
    event = make_event(instance_name="")
    unpadded = len(wire.encode(event))
    # One ASCII letter in the name adds one byte to the body.
    event = dataclasses.replace(event, instance_name="x" * (wire.MAX_BODY_BYTES - unpadded))
    body = wire.encode(event)
    assert len(body) == wire.MAX_BODY_BYTES

    assert wire.decode(body) == event


def _payload_with(p: dict[str, Any], **changes: Any) -> dict[str, Any]:
    return {**p, **changes}


def _without(notification: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in notification.items() if k != key}


#: name -> body builder (given a valid payload): every one must be MalformedEvent.
BAD_BODIES = {
    "not-json": lambda p: b"hypervisor.instance.stopped",
    "empty": lambda p: b"",
    "invalid-utf8": lambda p: b"\xff\xfe\xfa",
    "invalid-utf8-in-json-string": lambda p: b'{"oslo.version": "2.0", "oslo.message": "\xff"}',
    "json-array": lambda p: b"[1, 2, 3]",
    "json-number": lambda p: b"42",
    "json-null": lambda p: b"null",
    "json-string": lambda p: b'"stopped"',
    "oslo-version-1": lambda p: envelope(notification(p), version="1.0"),
    "oslo-version-3": lambda p: envelope(notification(p), version="3.0"),
    "oslo-version-number": lambda p: envelope(notification(p), version=2.0),
    "oslo-version-missing": lambda p: raw({"oslo.message": json.dumps(notification(p))}),
    "oslo-message-number": lambda p: raw({"oslo.version": "2.0", "oslo.message": 5}),
    "oslo-message-object": lambda p: raw({"oslo.version": "2.0", "oslo.message": notification(p)}),
    "oslo-message-not-json": lambda p: raw({"oslo.version": "2.0", "oslo.message": "not json"}),
    "oslo-message-array": lambda p: envelope([notification(p)]),
    "oslo-message-null": lambda p: envelope(None),
    "no-event-type": lambda p: envelope(_without(notification(p), "event_type")),
    "event-type-number": lambda p: envelope({**notification(p), "event_type": 7}),
    "another-services-event-type": lambda p: envelope(notification(p, "compute.instance.update")),
    "event-type-prefix-only": lambda p: envelope(notification(p, "hypervisor.instance.")),
    "event-type-contradicts-transition": lambda p: envelope(
        notification(_payload_with(p, transition="stopped"), "hypervisor.instance.started")
    ),
    "no-payload": lambda p: envelope(_without(notification(p), "payload")),
    "payload-array": lambda p: envelope({**notification(p), "payload": [p]}),
    "payload-malformed": lambda p: envelope(notification(_payload_with(p, seq="42"))),
    "payload-other-major-version": lambda p: envelope(
        notification(_payload_with(p, schema_version="2.0"))
    ),
    "over-max-body-bytes": lambda p: envelope(
        notification(_payload_with(p, instance_name="x" * wire.MAX_BODY_BYTES))
    ),
    "nested-100000-over-max": lambda p: b"[" * 100_000,
    # Under the size limit, so the parser itself meets the nesting.
    "nested-50000": lambda p: b"[" * 50_000,
    "nested-10000-objects": lambda p: b'{"a":' * 10_000,
    "nested-50000-in-oslo-message": lambda p: raw(
        {"oslo.version": "2.0", "oslo.message": "[" * 50_000}
    ),
}


@pytest.mark.parametrize("make_body", BAD_BODIES.values(), ids=BAD_BODIES.keys())
def test_decode_raises_only_malformed_event_for_a_bad_body(wire_payload, make_body):
    body = make_body(wire_payload)

    with pytest.raises(MalformedEvent):
        wire.decode(body)


def test_decode_refuses_a_str_body_whose_utf8_exceeds_max_body_bytes(wire_payload):
    # A valid notification of 3-byte characters: under the limit in characters, over in bytes.
    wire_payload["instance_name"] = "€" * (wire.MAX_BODY_BYTES // 3 + 1)
    inner = json.dumps(notification(wire_payload), ensure_ascii=False)
    body = json.dumps({"oslo.version": "2.0", "oslo.message": inner}, ensure_ascii=False)
    assert len(body) < wire.MAX_BODY_BYTES < len(body.encode())

    with pytest.raises(MalformedEvent):
        wire.decode(body)


# -- oslo.messaging compatibility --------------------------------------------------------


# oslo.messaging loads oslo.service's eventlet backend, which warns that eventlet is deprecated.
_IGNORE_EVENTLET_WARNING = pytest.mark.filterwarnings(r"ignore:\s*Eventlet is deprecated")


@pytest.fixture(scope="module")
def oslo_messaging() -> types.SimpleNamespace:
    """oslo.messaging's notifier, envelope and dispatcher."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import oslo_messaging
        from oslo_messaging._drivers import amqp as rpc_amqp
        from oslo_messaging._drivers import common as rpc_common
        from oslo_messaging.notify import _impl_test, dispatcher
    return types.SimpleNamespace(
        api=oslo_messaging,
        amqp=rpc_amqp,
        common=rpc_common,
        test_driver=_impl_test,
        dispatcher=dispatcher,
    )


@_IGNORE_EVENTLET_WARNING
def test_decode_reads_a_notification_sent_by_oslo_messaging(oslo_messaging):
    import kombu.serialization
    from oslo_config import cfg

    event = make_event(host="compute1.example.org", transition=Transition.PAUSED)
    # oslo.messaging's Notifier builds the notification ('test' driver: kept in memory) ...
    transport = oslo_messaging.api.get_notification_transport(cfg.ConfigOpts(), url="fake://")
    notifier = oslo_messaging.api.Notifier(
        transport,
        publisher_id="hypervisor-notifier.compute1.example.org",
        driver="test",
        topics=[f"{TOPIC}.compute1.example.org"],
    )
    oslo_messaging.test_driver.reset()
    notifier.info({}, "hypervisor.instance.paused", event.to_payload())
    ctxt, message, _priority, _retry = oslo_messaging.test_driver.NOTIFICATIONS[0]
    # ... and its rabbit driver packs it as for the messagingv2 driver, then kombu serializes.
    oslo_messaging.amqp._add_unique_id(message)
    oslo_messaging.amqp.pack_context(message, ctxt)
    _type, _encoding, body = kombu.serialization.dumps(
        oslo_messaging.common.serialize_msg(message), "json"
    )

    assert wire.decode(body) == event


@_IGNORE_EVENTLET_WARNING
def test_an_oslo_messaging_notification_listener_receives_the_event_unchanged(oslo_messaging):
    event = make_event(host="compute1.example.org", transition=Transition.STOPPED)
    received = []

    class Endpoint:
        def info(self, ctxt, publisher_id, event_type, payload, metadata):
            received.append((publisher_id, event_type, payload))

    # What oslo.messaging's rabbit driver does with a received body, then its dispatcher.
    message = oslo_messaging.common.deserialize_msg(json.loads(wire.encode(event)))
    ctxt = oslo_messaging.amqp.unpack_context(message)
    incoming = types.SimpleNamespace(ctxt=ctxt.to_dict(), message=message)
    dispatcher = oslo_messaging.dispatcher.NotificationDispatcher([Endpoint()], None)

    assert dispatcher.dispatch(incoming) == oslo_messaging.dispatcher.NotificationResult.HANDLED
    publisher_id = "hypervisor-notifier.compute1.example.org"
    assert received == [(publisher_id, "hypervisor.instance.stopped", event.to_payload())]


# -- names and queue arguments -------------------------------------------------------------


@pytest.mark.parametrize("host", ["compute1", "compute1.example.org"])
def test_routing_key_is_topic_host_info(host):
    assert wire.routing_key(TOPIC, host) == f"{TOPIC}.{host}.info"


@pytest.mark.parametrize("host", ["compute1", "compute1.example.org"])
def test_a_hosts_binding_receives_its_own_events_only(host):
    binding = wire.binding_key(TOPIC, host)

    assert topic_matches(binding, wire.routing_key(TOPIC, host))
    assert not topic_matches(binding, wire.routing_key(TOPIC, "compute2"))
    assert not topic_matches(binding, wire.routing_key(TOPIC, f"{host}.other"))


def test_the_every_host_binding_is_topic_hash():
    # Not '<topic>.*.info': '*' is exactly one word, and FQDN host names have dots, so
    # 'hypervisor_events.compute1.example.org.info' would never reach a '*.info' binding.
    assert wire.binding_key(TOPIC, None) == f"{TOPIC}.#"


@pytest.mark.parametrize("host", ["compute1", "compute1.example.org", "a.b.c.d.e"])
def test_the_every_host_binding_receives_every_hosts_events(host):
    binding = wire.binding_key(TOPIC, None)

    assert topic_matches(binding, wire.routing_key(TOPIC, host))
    assert not topic_matches(binding, wire.routing_key("other_topic", host))


def test_host_queue_is_topic_host_and_not_the_oslo_listeners_queue():
    name = wire.host_queue_name(TOPIC, "compute1.example.org")

    assert name == "hypervisor_events.compute1.example.org"
    # An oslo.messaging listener declares '<target topic>.<priority>': both must get every event.
    assert name != wire.routing_key(TOPIC, "compute1.example.org")


def test_quorum_queue_arguments_declare_a_quorum_queue():
    assert wire.queue_arguments("quorum") == {"x-queue-type": "quorum"}


def test_classic_queue_arguments_declare_a_classic_queue():
    assert wire.queue_arguments("classic").get("x-queue-type", "classic") == "classic"


@pytest.mark.parametrize("queue_type", ["fifo", "stream", "", "Quorum"])
def test_queue_arguments_reject_an_unknown_queue_type(queue_type):
    with pytest.raises(ValueError, match="classic"):
        wire.queue_arguments(queue_type)
