"""Publisher and Subscriber on a 3-node cluster with quorum host queues, through node failures.

Each test publishes a burst of events for a few guests through the real
Publisher (its transport URL names all three nodes) to a real Subscriber
(the same URL), and during the burst takes a node away: kill -9 of the node
the publisher is connected to, kill -9 of the node leading the host's
quorum queue, or a partition that pauses the node the publisher is connected
to (``pause_minority``; healed after the test). Events are put at a steady
pace from a thread of their own, so the fault lands mid-burst. Every event
must arrive exactly once after dedupe, each guest's in the order of its
``seq``. Each prints its counts.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import amqp
import pytest

from hypervisor_notifier import wire
from hypervisor_notifier.consumer import LifecycleEvent, Subscriber
from hypervisor_notifier.events import PowerState, Transition
from hypervisor_notifier.notifier.outbox import MemoryOutbox
from hypervisor_notifier.notifier.publisher import Publisher
from hypervisor_notifier.tls import BrokerAccess
from hypervisor_notifier.transport_url import TransportURL
from tests.broker import unique
from tests.factories import make_event

from .cluster import ClusterNode, RabbitCluster
from .conftest import TOPIC, Collector

EVENTS = 1500
GUESTS = 10
#: The node is taken away once this many events were put.
FAULT_AFTER = EVENTS // 3
SETTLE_TIMEOUT = 90.0


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitCluster]:
    """The 3-node cluster, started once for the session, killed at its end."""
    nodes = RabbitCluster(tmp_path_factory.mktemp("cluster"))
    try:
        nodes.start()
        yield nodes
    finally:
        nodes.stop()


@pytest.fixture
def healed(cluster: RabbitCluster) -> Iterator[RabbitCluster]:
    """The cluster, every node running again after the test (killed ones restarted)."""
    yield cluster
    for node in cluster.nodes:
        if node.partitioned:
            cluster.heal(node)
        cluster.start_node(node)


def burst(host: str) -> list[LifecycleEvent]:
    """EVENTS events of GUESTS guests, paused and resumed in turn, seq increasing."""
    guests = [unique("guest") for _ in range(GUESTS)]
    events = []
    for index in range(EVENTS):
        paused = (index // GUESTS) % 2 == 0
        events.append(
            make_event(
                host=host,
                instance_uuid=guests[index % GUESTS],
                transition=Transition.PAUSED if paused else Transition.RESUMED,
                power_state=PowerState.PAUSED if paused else PowerState.RUNNING,
                seq=index + 1,
            )
        )
    return events


def node_of_connection(cluster: RabbitCluster, connection_name: str) -> ClusterNode:
    """The node a client connection named ``connection_name`` is connected to."""
    out = cluster.any_running().ctl("list_connections", "port", "client_properties")
    for line in out.splitlines():
        if connection_name in line:
            return cluster.node_on_port(int(line.split("\t", 1)[0]))
    raise LookupError(f"no connection named {connection_name!r}:\n{out}")


def run_burst_with_fault(
    cluster: RabbitCluster, fault: Callable[[str, str], str], *, gap: float
) -> None:
    """Events to a Subscriber ``gap`` s apart; ``fault(host, queue)`` once FAULT_AFTER were put."""
    host, exchange = unique("cl"), unique("hn-cluster")
    queue = wire.host_queue_name(TOPIC, host)
    url = cluster.transport_url
    delivered = Collector()
    subscriber = Subscriber(url, delivered, host=host, exchange=exchange, topic=TOPIC,
                            queue_type="quorum")  # fmt: skip
    publisher = Publisher(MemoryOutbox(), access=BrokerAccess(TransportURL.parse(url)), host=host,
                          topology=wire.Topology(exchange, TOPIC, "quorum"),
                          reconnect_interval_max=1.0)  # fmt: skip
    events = burst(host)
    try:
        publisher.start()
        subscriber.start()
        assert subscriber.wait_ready(60), "the subscriber did not get ready"
        halfway = threading.Event()

        def feed() -> None:
            for index, event in enumerate(events):
                if index == FAULT_AFTER:
                    halfway.set()
                publisher.outbox.put(event)
                time.sleep(gap)  # a pace, not a wait for something

        feeder = threading.Thread(target=feed, name="feeder", daemon=True)
        feeder.start()
        halfway.wait()
        faulted = time.monotonic()
        did = fault(host, queue)
        feeder.join()
        complete = delivered.wait_for_count(EVENTS, SETTLE_TIMEOUT)
        settled = time.monotonic() - faulted
        stats = subscriber.stats
        print(
            f"\n{did}: {EVENTS} events of {GUESTS} guests; delivered {len(delivered.events)} "
            f"{settled:.1f} s after the fault began; publisher resent {publisher.resent}; "
            f"subscriber received {stats.received}, filtered {stats.duplicates} duplicates, "
            f"{stats.stale} stale"
        )
        ids = [event.event_id for event in delivered.events]
        assert complete, f"{EVENTS - len(set(ids))} events never arrived"
        assert len(ids) == len(set(ids)) == EVENTS
        assert set(ids) == {event.event_id for event in events}
        for guest in {event.instance_uuid for event in events}:
            seqs = [e.seq for e in delivered.events if e.instance_uuid == guest]
            assert seqs == sorted(seqs), f"guest {guest}'s events out of order"
    finally:
        subscriber.stop()
        publisher.stop(timeout=5)
        publisher.outbox.close()
        delete_on(cluster, exchange, queue)


def delete_on(cluster: RabbitCluster, exchange: str, queue: str) -> None:
    node = cluster.any_running()
    with amqp.Connection(f"127.0.0.1:{node.port}", userid="guest", password="guest") as conn:
        channel = conn.channel()
        channel.queue_delete(queue)
        channel.exchange_delete(exchange)


def test_kill_of_the_publishers_node_mid_burst_loses_and_reorders_nothing(healed):
    def kill_publishers_node(host: str, _queue: str) -> str:
        node = node_of_connection(healed, f"hypervisor-notifier {host}")
        node.kill9()
        return f"kill -9 of {node.node} (the publisher's node)"

    run_burst_with_fault(healed, kill_publishers_node, gap=0.002)


def test_kill_of_the_quorum_queue_leader_mid_burst_loses_and_reorders_nothing(healed):
    def kill_leader(_host: str, queue: str) -> str:
        node = healed.queue_leader(queue)
        node.kill9()
        return f"kill -9 of {node.node} (leader of {queue})"

    run_burst_with_fault(healed, kill_leader, gap=0.002)


def test_partition_pausing_the_publishers_node_mid_burst_loses_and_reorders_nothing(healed):
    def partition_publishers_node(host: str, _queue: str) -> str:
        node = node_of_connection(healed, f"hypervisor-notifier {host}")
        healed.partition(node)
        return f"partition pausing {node.node} (the publisher's node, pause_minority)"

    # The node pauses some 10 s after the cut: the burst lasts longer.
    run_burst_with_fault(healed, partition_publishers_node, gap=0.015)
