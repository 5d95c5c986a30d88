"""The oslo.messaging path of the throughput benchmark: ``Notifier.info``, one thread.

The Notifier (driver ``messagingv2``, ``amqp_durable_queues = true``)
declares the ``<topic>.info`` queue itself before its first publish, so
every message is routed. What it waits for: its kombu connection has
``confirm_publish`` set, so py-amqp's ``basic_publish_confirm`` waits for
the broker's ack after every message (one round trip per message);
``mandatory`` is off for notifications; and ``Notifier`` logs and swallows a
send that failed.
"""

from __future__ import annotations

import time
from pathlib import Path

import oslo_messaging
from bursts import EventMaker, Result, after_burst, purge
from harness import TRANSPORT_URL, Countdown, delete_broker_objects
from oslo_config import cfg

from hypervisor_notifier import wire
from hypervisor_notifier.events import LifecycleEvent

WARMUP = 200


class OsloEndpoint:
    """Notification endpoint: counts INFO notifications."""

    def __init__(self, received: Countdown) -> None:
        self.received = received

    def info(
        self, _ctxt: dict, _publisher_id: str, _event_type: str, _payload: dict, _meta: dict
    ) -> None:
        self.received()


def oslo_conf(path: Path, exchange: str) -> cfg.ConfigOpts:
    """A config file as an oslo.messaging user writes it: durable queues, our exchange."""
    path.write_text(
        f"[DEFAULT]\ncontrol_exchange = {exchange}\n\n"
        "[oslo_messaging_rabbit]\namqp_durable_queues = true\n"
    )
    conf = cfg.ConfigOpts()
    conf([], default_config_files=[str(path)])
    return conf


def measure_oslo(run_id: str, workdir: Path, count: int) -> Result:
    """``Notifier.info`` from one thread: a burst to broker, then one to a listener."""
    host = f"tbench-{run_id}-oslo"
    topic = f"tbench_{run_id}"
    exchange = f"tbench_oslo_{run_id}"
    queue = f"{topic}.info"
    transport = oslo_messaging.get_notification_transport(
        oslo_conf(workdir / "oslo.conf", exchange), url=TRANSPORT_URL
    )
    notifier = oslo_messaging.Notifier(
        transport,
        driver="messagingv2",
        topics=[topic],
        publisher_id=wire.PUBLISHER_PREFIX + host,
    )
    events = EventMaker(host)
    listener = None
    try:
        notify_burst(notifier, events.make(WARMUP))  # connects, declares <topic>.info
        purge(queue)
        result = after_burst(notify_burst(notifier, events.make(count)), queue, count)
        result.notes.append(f"what info() waits for: {oslo_waits_for(transport)}")
        received = Countdown(count)
        target = oslo_messaging.Target(topic=topic, exchange=exchange)
        listener = oslo_messaging.get_notification_listener(
            transport, [target], [OsloEndpoint(received)], executor="threading"
        )
        listener.start()
        started = time.perf_counter()
        result.to_broker_with_consumer = notify_burst(notifier, events.make(count))
        result.to_consumer = received.wait("notification listener") - started
        result.notes.append(f"listener received {received.count:,}")
    finally:
        if listener is not None:
            listener.stop()
            listener.wait()
        transport.cleanup()
        delete_broker_objects(exchanges=[exchange], queues=[queue])
    return result


def oslo_waits_for(transport: oslo_messaging.Transport) -> str:
    """Look at the Notifier's pooled connection (oslo's internals: may not be reachable)."""
    try:
        pool = transport._driver._connection_pool._items
        connection = next(item for entry in pool for item in entry if hasattr(item, "channel"))
        confirm = connection.connection.transport_options.get("confirm_publish")
        channel = connection.channel
        waits = channel.basic_publish == channel.basic_publish_confirm
    except (AttributeError, StopIteration) as exc:
        return f"not inspectable ({exc!r})"
    return (
        f"kombu confirm_publish={confirm}; py-amqp basic_publish is basic_publish_confirm "
        f"(waits for that message's ack): {waits}"
    )


def notify_burst(notifier: oslo_messaging.Notifier, events: list[LifecycleEvent]) -> float:
    """``info`` each event's payload; seconds until the last call returned (= was confirmed)."""
    messages = [(e.event_type, e.to_payload()) for e in events]
    started = time.perf_counter()
    for event_type, payload in messages:
        notifier.info({}, event_type, payload)
    return time.perf_counter() - started
