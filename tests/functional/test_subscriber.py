"""The consumer library's delivery semantics, against the real RabbitMQ."""

from __future__ import annotations

import collections
import socket

import amqp

from hypervisor_notifier import wire
from tests.factories import make_event

from .conftest import BROKER_URL, TOPIC, unique


def publish(broker: amqp.Channel, exchange: str, *events) -> None:
    """Publish events as the service does (persistent, routed by their host)."""
    for event in events:
        message = amqp.Message(wire.encode(event), delivery_mode=2)
        broker.basic_publish(message, exchange, wire.routing_key(TOPIC, event.host))


def declare_host_queue(broker: amqp.Channel, exchange: str, host: str) -> None:
    """What the publisher declares at connect: the durable per-host queue, bound."""
    broker.exchange_declare(exchange, "topic", durable=True, auto_delete=False)
    queue = wire.host_queue_name(TOPIC, host)
    broker.queue_declare(queue, durable=True, auto_delete=False)
    broker.queue_bind(queue, exchange, wire.routing_key(TOPIC, host))


def instance_events(host: str, count: int) -> list:
    instance = unique("instance")
    return [make_event(host=host, instance_uuid=instance, seq=seq) for seq in range(1, count + 1)]


def test_events_published_while_no_subscriber_runs_wait_in_the_host_queue(
    broker, names, subscribe
):
    declare_host_queue(broker, names["exchange"], names["host"])
    events = instance_events(names["host"], 3)
    publish(broker, names["exchange"], *events)

    _, collector = subscribe()
    collector.wait_for(lambda e: e.event_id == events[-1].event_id)
    assert collector.events == events


def test_a_failing_callback_is_retried_in_order(broker, names, subscribe):
    events = instance_events(names["host"], 3)
    failures = collections.Counter()

    def flaky(event):
        if event.event_id == events[1].event_id and failures[event.event_id] < 2:
            failures[event.event_id] += 1
            raise RuntimeError("application not ready")

    subscriber, collector = subscribe(before=flaky)
    publish(broker, names["exchange"], *events)

    collector.wait_for(lambda e: e.event_id == events[-1].event_id)
    assert collector.events == events
    assert (subscriber.stats.retried, subscriber.stats.delivered) == (2, 3)


def test_an_event_is_given_up_after_max_attempts_and_the_rest_flows(broker, names, subscribe):
    events = instance_events(names["host"], 3)

    def broken(event):
        if event.event_id == events[1].event_id:
            raise RuntimeError("poison")

    subscriber, collector = subscribe(before=broken, max_attempts=3)
    publish(broker, names["exchange"], *events)

    collector.wait_for(lambda e: e.event_id == events[-1].event_id)
    assert collector.events == [events[0], events[2]]
    assert (subscriber.stats.retried, subscriber.stats.failed) == (2, 1)


def test_duplicates_and_late_older_events_are_not_delivered(broker, names, subscribe):
    first, second, third = instance_events(names["host"], 3)
    subscriber, collector = subscribe()
    # A redelivery after a publisher reconnect, then an older event arriving late.
    publish(broker, names["exchange"], first, second, first, third, second)
    marker = make_event(host=names["host"])
    publish(broker, names["exchange"], marker)

    collector.wait_for(lambda e: e.event_id == marker.event_id)
    assert collector.events == [first, second, third, marker]
    assert (subscriber.stats.duplicates, subscriber.stats.stale) == (2, 0)
    late = make_event(host=names["host"], instance_uuid=third.instance_uuid, seq=2)
    marker = make_event(host=names["host"])
    publish(broker, names["exchange"], late, marker)
    collector.wait_for(lambda e: e.event_id == marker.event_id)
    assert late not in collector.events
    assert subscriber.stats.stale == 1


def test_an_all_hosts_subscriber_receives_every_hosts_events(broker, names, subscribe):
    other_host = f"{names['host']}.example.org"  # dotted FQDNs must match too
    queue = unique("hn-all")
    _, collector = subscribe(host=None, queue=queue)
    _, own_host_only = subscribe(exclusive=True)
    try:
        ours, theirs = make_event(host=names["host"]), make_event(host=other_host)
        marker = make_event(host=names["host"])
        publish(broker, names["exchange"], ours, theirs, marker)
        collector.wait_for(lambda e: e.event_id == marker.event_id)
        own_host_only.wait_for(lambda e: e.event_id == marker.event_id)
        assert collector.events == [ours, theirs, marker]
        assert own_host_only.events == [ours, marker]
    finally:
        broker.queue_delete(queue)


def test_kombu_fails_over_to_the_urls_next_host(broker, names, subscribe):
    with socket.socket() as closed:  # a port nothing listens on
        closed.bind(("127.0.0.1", 0))
        dead = closed.getsockname()[1]
    url = BROKER_URL.replace("@", f"@127.0.0.1:{dead},guest:guest@", 1)
    assert url.count("@") == 2, url
    _, collector = subscribe(transport_url=url)
    event = make_event(host=names["host"])

    publish(broker, names["exchange"], event)

    assert collector.wait_for(lambda e: e.event_id == event.event_id) == event


def queued(broker: amqp.Channel, queue: str) -> int:
    """Messages ready in ``queue`` (an unacknowledged one is back once its consumer is gone)."""
    return broker.queue_declare(queue, passive=True).message_count


def test_a_failure_in_the_middle_of_a_burst_redelivers_the_rest_in_order_once(
    broker, names, subscribe
):
    # Far more than the prefetch: deliveries already read ahead when the callback
    # fails go back to the broker with the one that failed.
    declare_host_queue(broker, names["exchange"], names["host"])
    events = instance_events(names["host"], 400)
    publish(broker, names["exchange"], *events)
    failures = collections.Counter()

    def flaky(event):
        if event.event_id == events[150].event_id and not failures[event.event_id]:
            failures[event.event_id] += 1
            raise RuntimeError("application not ready")

    subscriber, collector = subscribe(before=flaky, prefetch_count=60)
    collector.wait_for(lambda e: e.event_id == events[-1].event_id)
    subscriber.stop()

    assert collector.events == events
    assert (subscriber.stats.retried, subscriber.stats.delivered) == (1, 400)
    assert queued(broker, wire.host_queue_name(TOPIC, names["host"])) == 0


def test_a_malformed_message_in_a_batch_is_rejected_and_counted_the_rest_acked(
    broker, names, subscribe
):
    declare_host_queue(broker, names["exchange"], names["host"])
    before, after = instance_events(names["host"], 30), instance_events(names["host"], 30)
    publish(broker, names["exchange"], *before)
    broker.basic_publish(amqp.Message(b'{"oslo.version": "2.0", "oslo.message": "{"}'),
                         names["exchange"], wire.routing_key(TOPIC, names["host"]))  # fmt: skip
    publish(broker, names["exchange"], *after)

    subscriber, collector = subscribe(prefetch_count=100)
    collector.wait_for(lambda e: e.event_id == after[-1].event_id)
    subscriber.stop()

    assert collector.events == before + after
    assert (subscriber.stats.malformed, subscriber.stats.delivered) == (1, 60)
    # Acked, and the malformed one not requeued: nothing comes back once it is gone.
    assert queued(broker, wire.host_queue_name(TOPIC, names["host"])) == 0
