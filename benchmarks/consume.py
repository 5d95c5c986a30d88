"""Consume rate: the Subscriber beside an oslo.messaging listener and a raw py-amqp consumer.

Usage: ``python benchmarks/consume.py [--events N] [--prefetch P]`` (or ``tox -e bench``).

A benchmark, not a test. For each path in turn, N events (default 20,000;
bodies as the notifier publishes them, every event of a fleet of 1,000
hosts, 10 guests each) are put on a durable queue of the path's own first,
with nothing consuming; then the consumer starts and the clock runs from its
first delivery to the N-th callback (or, raw, the N-th ack). Same broker,
same bodies, same prefetch (``--prefetch``, default 500), one after the
other:

1. **raw py-amqp**: ``basic_consume``, an ack with ``multiple`` every
   prefetch/2 messages, no decoding: the anchor, what py-amqp alone costs
   (the Subscriber reads frames in bulk and skips py-amqp's message for a
   delivery read whole, so it can pass it).
2. **Subscriber** (``hypervisor_notifier.consumer``) of every host's events:
   decode, dedupe, order per instance, the callback, ack after it.
3. **Subscriber, verifying**: the same with signed events and a verifier.
4. **oslo.messaging notification listener** (``threading`` executor) on
   the same kind of queue.

Goal (issue): the Subscriber at least 10,000 events/s and at least 80 % of
the raw consumer, in the same run.

Beside each rate: this process's CPU time per event from the first event to
the last (every thread of it), which busy neighbours on a shared machine
disturb far less than the rates: the rate each path would reach if the
consumer's CPU, not the broker, were the limit.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
import uuid

import amqp
import oslo_messaging
from bursts import EventMaker
from harness import (
    BROKER,
    TRANSPORT_URL,
    Countdown,
    Watch,
    delete_broker_objects,
    machine_line,
    package_state,
    progress,
    rabbitmq_version,
    verdict,
    versions,
)
from oslo_config import cfg

from hypervisor_notifier import wire
from hypervisor_notifier.consumer import Subscriber
from hypervisor_notifier.signing import Signer, Verifier

TOPIC = "hypervisor_events"
HOSTS = 1000
KEY = b"consume-benchmark-signing-key-32bytes"
GOAL_RATE = 10_000
GOAL_VS_RAW = 0.80


def fill(exchange: str, queue: str, binding: str, bodies: list[tuple[str, bytes]]) -> None:
    """Declare the queue, bind it, and publish every (routing key, body) with confirms."""
    with amqp.Connection(**BROKER) as connection:
        channel = connection.channel()
        channel.exchange_declare(exchange, "topic", durable=True, auto_delete=False)
        channel.queue_declare(queue, durable=True, auto_delete=False)
        channel.queue_bind(queue, exchange, binding)
        channel.confirm_select()
        for key, body in bodies:
            channel.basic_publish(amqp.Message(body, content_type=wire.CONTENT_TYPE,
                                               delivery_mode=2), exchange, key)  # fmt: skip
        # Confirms of the last publish cover every earlier one.
        channel.basic_publish_confirm(amqp.Message(b"{}"), exchange, "unrouted.none")


def bodies_for(count: int, signer: Signer | None) -> list[tuple[str, bytes]]:
    makers = [EventMaker(f"cbench-{index:04d}") for index in range(HOSTS)]
    out = []
    for index in range(count):
        (event,) = makers[index % HOSTS].make(1)
        out.append((wire.routing_key(TOPIC, event.host), wire.encode(event, signer)))
    return out


class CpuPerEvent:
    """This process's CPU time from the first event to the last, per event (any thread)."""

    def __init__(self, count: int) -> None:
        self.count, self._start, self.per_event = count, 0.0, 0.0

    def start(self) -> None:
        self._start = time.process_time()

    def stop(self) -> None:
        self.per_event = (time.process_time() - self._start) / self.count


def measure_raw(exchange: str, queue: str, count: int, prefetch: int) -> tuple[float, float]:
    with amqp.Connection(**BROKER) as connection:
        channel = connection.channel()
        channel.basic_qos(0, prefetch, False)
        received = 0
        started = 0.0

        def on_message(message: amqp.Message) -> None:
            nonlocal received, started
            received += 1
            if received == 1:
                started = time.perf_counter()
                cpu.start()
            if received % (prefetch // 2) == 0 or received == count:
                channel.basic_ack(message.delivery_tag, multiple=True)

        cpu = CpuPerEvent(count)
        channel.basic_consume(queue, callback=on_message)
        while received < count:
            connection.drain_events(timeout=60)
        cpu.stop()
        return time.perf_counter() - started, cpu.per_event


def measure_subscriber(exchange: str, queue: str, count: int, prefetch: int,
                       verifier: Verifier | None) -> tuple[float, float]:  # fmt: skip
    first = threading.Event()
    started = [0.0]
    done, cpu = Countdown(count), CpuPerEvent(count)

    def callback(_event: object) -> None:
        if not first.is_set():
            started[0] = time.perf_counter()
            cpu.start()
            first.set()
        done()
        if done.count == count:
            cpu.stop()

    subscriber = Subscriber(TRANSPORT_URL, callback, queue=queue, exchange=exchange,
                            topic=TOPIC, prefetch_count=prefetch, verifier=verifier)  # fmt: skip
    subscriber.start()
    try:
        return done.wait("Subscriber callbacks") - started[0], cpu.per_event
    finally:
        subscriber.stop()


class Endpoint:
    def __init__(self, done: Countdown, first: list[float], cpu: CpuPerEvent) -> None:
        self.done, self.first, self.cpu = done, first, cpu

    def info(self, *_args: object) -> None:
        if not self.first:
            self.first.append(time.perf_counter())
            self.cpu.start()
        self.done()
        if self.done.count == self.done.target:
            self.cpu.stop()


def measure_oslo(exchange: str, topic: str, count: int, prefetch: int) -> tuple[float, float]:
    conf = cfg.ConfigOpts()
    conf([], default_config_files=[])
    transport = oslo_messaging.get_notification_transport(conf, url=TRANSPORT_URL)
    conf.set_override("amqp_durable_queues", True, group="oslo_messaging_rabbit")
    conf.set_override("rabbit_qos_prefetch_count", prefetch, group="oslo_messaging_rabbit")
    done, first, cpu = Countdown(count), [], CpuPerEvent(count)
    listener = oslo_messaging.get_notification_listener(
        transport, [oslo_messaging.Target(topic=topic, exchange=exchange)],
        [Endpoint(done, first, cpu)], executor="threading",
    )  # fmt: skip
    listener.start()
    try:
        return done.wait("oslo listener") - first[0], cpu.per_event
    finally:
        listener.stop()
        listener.wait()
        transport.cleanup()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--prefetch", type=int, default=500)
    args = parser.parse_args(argv)
    count, prefetch = args.events, args.prefetch
    run = uuid.uuid4().hex[:6]
    rates: dict[str, float] = {}
    cpus: dict[str, float] = {}
    notes: list[str] = []
    plain, signed = bodies_for(count, None), bodies_for(count, Signer("1", KEY))
    paths = {
        "raw py-amqp consumer": (plain, lambda x, q: measure_raw(x, q, count, prefetch)),
        "Subscriber": (plain, lambda x, q: measure_subscriber(x, q, count, prefetch, None)),
        "Subscriber, verifying": (signed, lambda x, q: measure_subscriber(
            x, q, count, prefetch, Verifier({"1": KEY}))),
    }  # fmt: skip
    for label, (bodies, measure) in paths.items():
        exchange, queue = f"cbench_{run}_{len(rates)}", f"{TOPIC}.cbench-{run}-{len(rates)}"
        try:
            fill(exchange, queue, f"{TOPIC}.#", bodies)
            progress(f"measuring {label}: {count:,} events queued")
            watch = Watch()
            seconds, cpus[label] = measure(exchange, queue)
            rates[label] = count / seconds
            note, problems = watch.finish()
            notes += [f"  {label}: {note}", *(f"  WARNING {label}: {p}" for p in problems)]
        finally:
            delete_broker_objects(exchanges=[exchange], queues=[queue])
    topic, exchange = f"cbench_{run}", f"cbench_oslo_{run}"
    try:
        # The listener's own queue <topic>.info, declared by a first start.
        fill(exchange, f"{topic}.info", f"{topic}.info",
             [(f"{topic}.info", body) for _, body in plain])  # fmt: skip
        progress(f"measuring oslo.messaging listener: {count:,} events queued")
        watch = Watch()
        seconds, cpus["oslo.messaging listener"] = measure_oslo(exchange, topic, count, prefetch)
        rates["oslo.messaging listener"] = count / seconds
        note, problems = watch.finish()
        notes += [f"  oslo.messaging listener: {note}", *(f"  WARNING: {p}" for p in problems)]
    finally:
        delete_broker_objects(exchanges=[exchange], queues=[f"{topic}.info"])
    raw, raw_cpu = rates["raw py-amqp consumer"], cpus["raw py-amqp consumer"]
    lines = [
        machine_line(),
        f"package: {package_state()}; RabbitMQ {rabbitmq_version()}; "
        + versions("amqp", "kombu", "oslo.messaging"),
        f"consume rate, {count:,} events already queued, prefetch {prefetch}, events/s:",
        *(
            f"  {label:<28}{rate:>10,.0f}  ({rate / raw:.0%} of raw)   "
            f"CPU {cpus[label] * 1e6:5.1f} us/event ({raw_cpu / cpus[label]:.0%} of raw's rate "
            "if both were CPU-bound)"
            for label, rate in rates.items()
        ),
        f"goal: Subscriber >= {GOAL_RATE:,}/s: {verdict(rates['Subscriber'] >= GOAL_RATE)}; "
        f">= {GOAL_VS_RAW:.0%} of raw: {verdict(rates['Subscriber'] >= GOAL_VS_RAW * raw)}",
        *notes,
    ]
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
