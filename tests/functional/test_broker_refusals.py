"""A broker that refuses events (nacks, returns): every event still arrives, counted and reported.

On a private plain-TCP RabbitMQ node (policies and deleted queues are faults
the shared node must not see), with the real service and a private
libvirtd's test driver (no other test's guests: every event is counted).
What arrived is read raw from the host queue, so that nothing the
consumer library would drop (a stale or duplicate event) hides a loss.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable

import amqp
import libvirt
import pytest

from hypervisor_notifier import wire
from hypervisor_notifier.events import LifecycleEvent
from hypervisor_notifier.notifier.refusals import REPORTED_FOR
from tests.factories import make_event
from tests.service_process import TIMEOUT

from .conftest import TOPIC, domain_xml, unique
from .faults import (
    Burst,
    HealthWatch,
    metrics,
    real_power_state,
    wait_for_health,
    wait_until,
)

BURST = 3000
QUEUE_LIMIT = 50
#: Seconds the slow consumer spends on each message: slower than the burst.
CONSUMER_PACE = 0.002


class QueueReader(threading.Thread):
    """Consume a queue of the private node, one unacked message at a time, recording each event.

    Arguments:
        url_port: The private node's port.
        queue: The queue to read (it must exist).
        pace: Seconds spent on each message (a slow consumer).

    """

    def __init__(self, port: int, queue: str, pace: float = 0.0) -> None:
        super().__init__(name="queue-reader", daemon=True)
        self.port, self.queue, self.pace = port, queue, pace
        self.events: list[LifecycleEvent] = []
        self._stopping = threading.Event()
        self._ready = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with amqp.Connection(f"127.0.0.1:{self.port}", userid="guest",
                                 password="guest") as connection:  # fmt: skip
                channel = connection.channel()
                channel.basic_qos(0, 1, False)
                channel.basic_consume(self.queue, callback=self._on_message(channel))
                self._ready.set()
                while not self._stopping.is_set():
                    with contextlib.suppress(TimeoutError):
                        connection.drain_events(timeout=0.2)
        except BaseException as exc:
            self.error = exc
            self._ready.set()

    def _on_message(self, channel: amqp.Channel):
        def handle(message: amqp.Message) -> None:
            self.events.append(wire.decode(message.body))
            if self.pace:
                time.sleep(self.pace)  # the slowness under test, not a wait for a condition
            channel.basic_ack(message.delivery_tag)

        return handle

    def start_reading(self) -> QueueReader:
        self.start()
        assert self._ready.wait(30) and self.error is None, self.error
        return self

    def finish(self) -> None:
        self._stopping.set()
        self.join(30)
        assert self.error is None, self.error

    def event_ids(self) -> set[str]:
        return {event.event_id for event in list(self.events)}


def read_queue(port: int, queue: str) -> list[wire.WireEvent]:
    """Every message waiting in ``queue`` (taken off it); none if there is no such queue."""
    found = []
    with amqp.Connection(f"127.0.0.1:{port}", userid="guest", password="guest") as connection:
        channel = connection.channel()
        with contextlib.suppress(amqp.exceptions.NotFound):
            while (message := channel.basic_get(queue, no_ack=True)) is not None:
                found.append(wire.decode(message.body))
    return found


def last_per_instance(events: list[LifecycleEvent]) -> dict[str, LifecycleEvent]:
    last = {}
    for event in events:
        if isinstance(event, LifecycleEvent):  # not the host events (connected at start)
            last[event.instance_uuid] = event
    return last


def received_total(sample: dict[str, float]) -> float:
    return sum(
        sample[f'hypervisor_notifier_events_received_total{{kind="{kind}"}}']
        for kind in ("pushed", "resync")
    )


@pytest.fixture
def reject_publish_policy(reject_publish):
    reject_publish(QUEUE_LIMIT)


def own_guests(libvirtd, count: int) -> tuple[libvirt.virConnect, list[libvirt.virDomain]]:
    """``count`` running guests on the private libvirtd, and the connection that keeps them."""
    conn = libvirt.open(libvirtd.uri)  # the test driver forgets them once nobody is connected
    domains = [conn.defineXML(domain_xml(unique("hn-dom"))) for _ in range(count)]
    for dom in domains:
        dom.create()
    return conn, domains


def wait_drained(port: int, accepted: Callable[[dict[str, float]], bool]) -> dict[str, float]:
    """Wait until the service accepted what ``accepted`` wants and confirmed all; its metrics."""
    samples = [metrics(port)]

    def drained() -> bool:
        samples[0] = metrics(port)
        return samples[0]["hypervisor_notifier_outbox_depth"] == 0 and accepted(samples[0])

    wait_until(drained, timeout=300, what=lambda: f"not all confirmed: {samples[0]}")
    return samples[0]


@pytest.mark.usefixtures("reject_publish_policy")
def test_a_burst_into_a_full_queue_arrives_whole_and_nacks_are_counted_and_reported(
    private_broker, private_names, private_libvirtd, start_service
):
    conn, domains = own_guests(private_libvirtd, 10)
    service = start_service(transport_url=private_broker.url, uri=private_libvirtd.uri)
    service.wait_for_log("resync (connected)")
    service.wait_for_log("connected to broker")  # the host queue is declared
    port = service.health_port
    queue = wire.host_queue_name(TOPIC, private_names["host"])
    reader = QueueReader(private_broker.port, queue, pace=CONSUMER_PACE).start_reading()
    health = HealthWatch(port)
    try:
        resynced = received_total(metrics(port))
        burst = Burst(domains, BURST)
        burst.start()
        burst.finish()
        # The service got the whole burst and the broker confirmed all of it.
        sample = wait_drained(port, lambda s: received_total(s) == resynced + BURST)
        # What the broker confirmed arrives (or the consumer waits here forever).
        wait_until(
            lambda: len(reader.event_ids()) >= resynced + BURST,
            timeout=60,
            what=lambda: f"{len(reader.event_ids())} of {resynced + BURST:.0f} events arrived",
        )
    finally:
        reader.finish()
        health.stop()
    pushed = {e.event_id for e in reader.events if isinstance(e, LifecycleEvent) and not e.resync}
    assert len(pushed) == BURST
    assert sample["hypervisor_notifier_events_nacked_total"] > 0, "the broker nacked nothing"
    assert sample["hypervisor_notifier_events_confirmed_total"] == len(reader.event_ids())
    # The last message of each guest is its latest event: its real state.
    last = last_per_instance(reader.events)
    for dom in domains:
        uuid = dom.UUIDString()
        assert last[uuid].power_state == real_power_state(dom)
        assert last[uuid].seq == max(e.seq for e in reader.events if e.subject == uuid)
    assert any("nacked" in problem for problem in health.problems), health.problems
    print(
        f"\nreject-publish (max-length {QUEUE_LIMIT}): {BURST} events, "
        f"{sample['hypervisor_notifier_events_nacked_total']:.0f} nacks, "
        f"{sample['hypervisor_notifier_events_resent_total']:.0f} resent, "
        f"{len(reader.events)} messages read, {len(reader.event_ids())} distinct, "
        f"{sample['hypervisor_notifier_events_confirmed_total']:.0f} confirmed"
    )
    # Once the broker takes events again, /healthz clears (REPORTED_FOR s after the last nack).
    wait_for_health(port, 200, timeout=REPORTED_FOR + TIMEOUT)
    assert service.stop() == 0
    conn.close()


def test_a_host_queue_deleted_mid_stream_is_declared_again_and_every_event_arrives_in_it(
    private_broker, private_names, private_libvirtd, start_service
):
    conn, domains = own_guests(private_libvirtd, 5)
    service = start_service(transport_url=private_broker.url, uri=private_libvirtd.uri)
    service.wait_for_log("resync (connected)")
    port = service.health_port
    queue = wire.host_queue_name(TOPIC, private_names["host"])
    health = HealthWatch(port)
    try:
        before = Burst(domains, 100)
        before.start()
        before.finish()
        accepted = received_total(wait_drained(port, lambda s: received_total(s) >= 100))
        # Someone deletes the host queue (and what was in it: not the service's doing).
        with private_broker.channel() as channel:
            channel.queue_delete(queue)
        after = Burst(domains, 500)
        after.start()
        after.finish()
        sample = wait_drained(port, lambda s: received_total(s) == accepted + 500)
    finally:
        health.stop()
    arrived = read_queue(private_broker.port, queue)
    assert len({e.event_id for e in arrived}) == 500, "events lost into nowhere"
    assert sample["hypervisor_notifier_events_returned_total"] > 0
    assert any("returned" in problem for problem in health.problems), health.problems
    print(
        f"\nhost queue deleted: 500 events after, "
        f"{sample['hypervisor_notifier_events_returned_total']:.0f} returned, "
        f"{sample['hypervisor_notifier_events_resent_total']:.0f} resent, "
        f"{len(arrived)} messages in the queue declared again"
    )
    for dom in domains:
        assert last_per_instance(arrived)[dom.UUIDString()].power_state == real_power_state(dom)
    assert service.stop() == 0
    conn.close()


def test_a_reject_publish_limit_added_to_a_queue_holding_events_keeps_them_all(
    private_broker, private_names, private_libvirtd, start_service, reject_publish
):
    """The limit as doc/source/operations.rst says to add it (and the chaos test does).

    In one policy, RabbitMQ would drop what the queue holds beyond the limit:
    events it had confirmed, gone from the outbox, lost.
    """
    conn, domains = own_guests(private_libvirtd, 5)
    service = start_service(transport_url=private_broker.url, uri=private_libvirtd.uri)
    service.wait_for_log("resync (connected)")
    port = service.health_port
    queue = wire.host_queue_name(TOPIC, private_names["host"])
    burst = Burst(domains, 100)
    burst.start()
    burst.finish()
    # No consumer: every event the broker confirmed waits in the host queue.
    accepted = received_total(wait_drained(port, lambda s: received_total(s) >= 100))
    reject_publish(5)
    with private_broker.channel() as channel, pytest.raises(amqp.exceptions.MessageNacked):
        # The limit is in force: the broker refuses what goes beyond it.
        channel.basic_publish_confirm(amqp.Message("over the limit"), "", queue)
    # The guests' events (the host's "connected" at start is counted apart, not received).
    arrived = [e for e in read_queue(private_broker.port, queue) if isinstance(e, LifecycleEvent)]
    assert len({e.event_id for e in arrived}) == accepted, "the limit dropped confirmed events"
    assert service.stop() == 0
    conn.close()


def test_without_a_host_queue_of_its_own_events_wait_in_the_outbox_until_a_queue_is_bound(
    start_publisher, broker, names
):
    """``declare_host_queue = false``: nothing is bound, every message comes back; none is lost."""
    publisher = start_publisher(declare_host_queue=False).publisher
    event = make_event(host=names["host"])
    publisher.outbox.put(event)
    # Returned, sent again after a backoff, returned again: kept all along (and not
    # confirmed into nowhere, which would empty the outbox).
    wait_until(lambda: publisher.refusals.returned >= 2 or not len(publisher.outbox))
    assert (len(publisher.outbox), publisher.confirmed) == (1, 0), "confirmed into nowhere"
    assert "declare_host_queue" in publisher.refusals.problem()

    queue = wire.host_queue_name(TOPIC, names["host"])  # the names fixture deletes it
    broker.queue_declare(queue, durable=True, auto_delete=False)
    broker.queue_bind(queue, names["exchange"], wire.routing_key(TOPIC, names["host"]))
    wait_until(lambda: publisher.confirmed == 1, what=lambda: str(publisher.refusals.problem()))
    message = broker.basic_get(queue, no_ack=True)
    assert wire.decode(message.body).event_id == event.event_id
