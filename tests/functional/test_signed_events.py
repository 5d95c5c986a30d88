"""Signed events, real broker: injected, forged and replayed events never reach the app."""

from __future__ import annotations

import json

import amqp
import pytest

from hypervisor_notifier import events, wire
from hypervisor_notifier.events import Transition
from hypervisor_notifier.signing import Signer, Verifier
from tests.factories import make_event

from .conftest import TIMEOUT, TOPIC, unique

KEY = b"the-current-key-of-this-deployment"
PREVIOUS_KEY = b"the-previous-key-of-this-deployment"


@pytest.fixture
def captured(broker, names):
    """A spy queue bound to this test's host key: what an eavesdropper on the bus sees."""
    queue = unique("hn-spy")
    broker.exchange_declare(names["exchange"], "topic", durable=True, auto_delete=False)
    broker.queue_declare(queue, durable=False, auto_delete=False)
    broker.queue_bind(queue, names["exchange"], wire.routing_key(TOPIC, names["host"]))

    def next_body() -> bytes:
        message = broker.basic_get(queue, no_ack=True)
        assert message is not None, "the spy queue is empty"
        return message.body

    yield next_body
    broker.queue_delete(queue)


def inject(broker: amqp.Channel, body: bytes, names: dict[str, str]) -> None:
    """Publish ``body`` to the test host's routing key as an attacker would, confirmed.

    Confirmed: it is in the queue before anything the test sends next, on any
    connection (an unconfirmed publish may reach the queue after them).
    """
    broker.confirm_select()
    broker.basic_publish_confirm(amqp.Message(body, delivery_mode=2), names["exchange"],
                                 wire.routing_key(TOPIC, names["host"]))  # fmt: skip


def forged(body: bytes, **changes: object) -> bytes:
    """A captured body with payload fields changed (and the event_type to match)."""
    outer = json.loads(body)
    inner = json.loads(outer["oslo.message"])
    inner["payload"].update(changes)
    inner["event_type"] = events.INSTANCE_EVENT_PREFIX + inner["payload"]["transition"]
    outer["oslo.message"] = json.dumps(inner)
    return json.dumps(outer).encode()


def test_injected_forged_and_replayed_events_are_rejected_counted_and_never_delivered(
    broker, names, subscribe, start_publisher, captured, caplog
):
    verifier = Verifier({"2": KEY, "1": PREVIOUS_KEY})
    subscriber, collector = subscribe(verifier=verifier)
    instance = unique("instance")
    legit = start_publisher(signer=Signer("2", KEY))
    legit_event = make_event(host=names["host"], instance_uuid=instance, seq=1,
                             transition=Transition.STARTED)  # fmt: skip
    legit.send(legit_event)
    collector.wait_for(lambda e: e.event_id == legit_event.event_id)
    body = captured()

    # Other publishers on the same exchange and routing key, all real Publishers.
    attacks = {
        "no key": start_publisher(signer=None),
        "wrong key, right id": start_publisher(signer=Signer("2", b"w" * 32)),
        "unknown key id": start_publisher(signer=Signer("3", b"w" * 32)),
    }
    for publisher in attacks.values():
        publisher.send(make_event(host=names["host"], instance_uuid=instance, seq=2))
    captured_payload = json.loads(json.loads(body)["oslo.message"])["payload"]
    # A captured event replayed as it is, and one edited into a "stopped".
    inject(broker, body, names)
    edited = forged(
        body, transition="stopped", power_state=4, event_id=captured_payload["event_id"] + "x"
    )
    inject(broker, edited, names)

    # A signed event after them all passes (and so does the previous key's).
    old_key = start_publisher(signer=Signer("1", PREVIOUS_KEY))
    marker = make_event(host=names["host"], instance_uuid=instance, seq=3)
    old_key.send(marker)
    collector.wait_for(lambda e: e.event_id == marker.event_id, TIMEOUT)

    assert collector.events == [legit_event, marker]
    assert all(event.verified for event in collector.events)
    stats = subscriber.stats
    assert (stats.unverified, stats.replayed, stats.delivered) == (4, 1, 2), stats
    assert stats.malformed == 0
    # Rejected without requeue: nothing waits in the host queue.
    _, waiting, _ = broker.queue_declare(wire.host_queue_name(TOPIC, names["host"]), passive=True)
    assert waiting == 0
    refused = [r.getMessage() for r in caplog.records if "rejected a" in r.getMessage()]
    assert len(refused) == 5, refused
    assert not any(secret in line for line in refused for secret in ("current-key", "wwww"))


def test_without_a_verifier_signed_events_are_delivered_unverified(
    names, subscribe, start_publisher
):
    _, collector = subscribe()
    event = make_event(host=names["host"])
    start_publisher(signer=Signer("2", KEY)).send(event)
    received = collector.wait_for(lambda e: e.event_id == event.event_id)
    assert received == event and not received.verified


def test_a_captured_paused_event_replayed_after_a_consumer_restart_is_refused(
    broker, names, subscribe, start_publisher, captured, tmp_path
):
    state_file = str(tmp_path / "consumer.sqlite")
    subscriber, collector = subscribe(verifier=Verifier({"2": KEY}), state_file=state_file)
    notifier = start_publisher(signer=Signer("2", KEY))
    instance = unique("instance")
    paused = make_event(host=names["host"], instance_uuid=instance, seq=1,
                        transition=Transition.PAUSED)  # fmt: skip
    resumed = make_event(host=names["host"], instance_uuid=instance, seq=2,
                         transition=Transition.RESUMED)  # fmt: skip
    notifier.send(paused, resumed)
    collector.wait_for(lambda e: e.event_id == resumed.event_id)
    body = captured()  # the signed "paused", as an eavesdropper kept it
    subscriber.stop()

    # A new consumer process: a fresh verifier (no memory), the same state file.
    restarted, after_restart = subscribe(verifier=Verifier({"2": KEY}), state_file=state_file)
    inject(broker, body, names)
    marker = make_event(host=names["host"], seq=3)
    notifier.send(marker)
    after_restart.wait_for(lambda e: e.event_id == marker.event_id)

    assert after_restart.events == [marker]  # the guest runs: no "paused" reaches the app
    assert restarted.stats.replayed == 1


def test_another_hosts_signed_event_injected_into_this_hosts_queue_is_refused(
    broker, names, subscribe, start_publisher
):
    # A plain host subscriber, no nova adapter: it must refuse by itself.
    subscriber, collector = subscribe(verifier=Verifier({"2": KEY}))
    signer = Signer("2", KEY)
    # Validly signed by host A's notifier (the key is the deployment's), routed to B.
    theirs = make_event(host=f"other-{names['host']}", reason="VmGuestShutdownEvent")
    inject(broker, wire.encode(theirs, signer), names)
    marker = make_event(host=names["host"])
    start_publisher(signer=signer).send(marker)
    collector.wait_for(lambda e: e.event_id == marker.event_id)

    assert collector.events == [marker]
    assert subscriber.stats.other_host == 1
    _, waiting, _ = broker.queue_declare(wire.host_queue_name(TOPIC, names["host"]), passive=True)
    assert waiting == 0  # rejected, not left to come back
