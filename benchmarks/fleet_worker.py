"""One process of the fleet benchmark: simulated hosts' Publishers, or their Subscribers.

Not run by hand: ``fleet.py`` starts a few of each role. Arguments (JSON on
stdin): the role (``publish`` or ``consume``), the transport URL, exchange,
queue type, host names, the event rate per host, the burst size, period and
phase, the duration, and whether the hosts' subscribers share a connection.

- ``publish``: starts each host's Publisher (25 at a time), prints
  ``ready``, waits for ``go``, publishes for the duration, waits for the
  confirms, and prints per host what it sent and each event's put-to-confirm
  time, and how late the event generator ran (not latency: an event's clock
  starts when it is put). Both roles report the CPU seconds they used.
- ``consume``: starts each host's Subscriber, prints ``ready``, reads the
  counts each host sent (a JSON line), waits until its subscribers received
  them, and prints per host what it received, whether any event was
  another host's, and each event's put-to-callback latency.

Publishers and subscribers run in processes of their own, as a host's
notifier and its nova-compute adapter do: a thread reading a socket in a
process whose other threads keep the GIL busy gets it back only every
switch interval (5 ms), and a subscriber group's one thread then falls
behind. Each host's Publisher has a connection of its own, as on a real
compute host. Its Subscriber is consumed over a connection of its own too,
or, with ``shared``, through a :class:`SubscriberGroup` per node (of the
hosts whose URL starts there, 500 at most): a channel each on one connection
to that node and one thread.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import threading
import time
import uuid

from hypervisor_notifier import wire
from hypervisor_notifier.consumer import LifecycleEvent, Subscriber, SubscriberGroup
from hypervisor_notifier.events import Observation, PowerState, Transition, utcnow
from hypervisor_notifier.notifier.outbox import MemoryOutbox
from hypervisor_notifier.notifier.publisher import Publisher
from hypervisor_notifier.tls import BrokerAccess
from hypervisor_notifier.transport_url import TransportURL

SETTLE_TIMEOUT = 60.0
#: Seconds a subscriber's loop waits on an idle socket before it checks for a stop request.
POLL_INTERVAL = 1.0
#: Most subscribers of one SubscriberGroup (one connection).
GROUP_SIZE = 500
#: Publishers started together; the next ones once these are connected (their queue
#: declared). A fleet's hosts do not all create their queue in the same second, and a
#: quorum queue's creation is a Raft group forming on three nodes: a thousand at once on
#: a busy cluster time out (``cluster_not_formed``) and are retried with backoff.
RAMP = 25
SETUP_TIMEOUT = 300.0


def starting_at(url: str, index: int) -> str:
    """``url`` with its hosts rotated to start at the ``index``-th (modulo their number).

    Publishers and subscribers connect to the URL's first host first: a fleet
    whose hosts all list the nodes in the same order puts every connection on
    one node. Real hosts' URLs list them in different orders (doc/source/scale.rst).
    """
    parsed = TransportURL.parse(url)
    start = index % len(parsed.hosts)
    return dataclasses.replace(parsed, hosts=parsed.hosts[start:] + parsed.hosts[:start]).unparse()


class SimulatedHost:
    """A compute host's publisher and its own subscriber, on the cluster.

    Arguments:
        host: The host name (routing key and queue).
        settings: The run's settings (URL, exchange, queue type).
        index: The host's number: its URL starts at the node of that number.

    """

    def __init__(self, host: str, settings: dict, index: int) -> None:
        self.host = host
        self.guest = str(uuid.uuid4())
        self.sent = 0
        self.seq = 0
        self.latencies: list[float] = []
        self.foreign = 0
        self.received = 0
        #: Seconds from the put to the broker's confirm (the publishing side of the latency).
        self.confirms: list[float] = []
        url = starting_at(settings["transport_url"], index)
        common = {"exchange": settings["exchange"], "topic": settings["topic"],
                  "queue_type": settings["queue_type"]}  # fmt: skip
        if settings["role"] == "publish":
            access = BrokerAccess(TransportURL.parse(url))
            self.publisher = Publisher(MemoryOutbox(), access=access, host=host,
                                       topology=wire.Topology(**common),
                                       reconnect_interval_max=5.0)  # fmt: skip
            self.publisher.observe_latency = self.confirms.append
        else:
            self.subscriber = Subscriber(url, self.on_event, host=host, prefetch_count=50,
                                         poll_interval=POLL_INTERVAL, **common)  # fmt: skip

    def on_event(self, event: LifecycleEvent) -> None:
        received = time.time()
        if event.host != self.host:
            self.foreign += 1
            return
        self.received += 1
        self.latencies.append((received - event.occurred_at.timestamp()) * 1000)

    def publish(self) -> None:
        """One paused/resumed change of the host's guest, put in the publisher's outbox."""
        paused = self.seq % 2 == 0
        self.seq += 1
        observation = Observation(
            self.guest,
            f"instance-{self.host}",
            Transition.PAUSED if paused else Transition.RESUMED,
            PowerState.PAUSED if paused else PowerState.RUNNING,
            "SUSPENDED" if paused else "RESUMED",
            "PAUSED" if paused else "UNPAUSED",
            occurred_at=utcnow(),
        )
        event = LifecycleEvent.from_observation(
            observation, host=self.host, hypervisor="libvirt", seq=self.seq
        )
        self.publisher.outbox.put(event)
        self.sent += 1

    def report(self, role: str) -> dict:
        if role == "publish":
            return {"host": self.host, "sent": self.sent, "resent": self.publisher.resent,
                    "confirms_ms": [seconds * 1000 for seconds in self.confirms]}  # fmt: skip
        return {"host": self.host, "received": self.received, "foreign": self.foreign,
                "latencies_ms": self.latencies}  # fmt: skip


def drive(hosts: list[SimulatedHost], settings: dict) -> list[float]:
    """Each host one event per 1/rate s, spread over the period, plus a burst now and then.

    Bursts come every ``burst_every`` periods: for every host at once
    (``together``), or each host's in a period of its own (``spread``), as
    independent hosts would. Returns how late (ms) each host's turn came:
    the generator falling behind, reported apart from the latency.
    """
    period = 1.0 / settings["rate"]
    burst, every = settings["burst"], settings["burst_every"]
    spread = settings["burst_phase"] == "spread"
    late: list[float] = []
    started = time.monotonic()
    tick = 0
    while time.monotonic() - started < settings["duration"]:
        for index, host in enumerate(hosts):
            # Spread the hosts over the period, as independent hosts would be.
            due = started + tick * period + index * period / len(hosts)
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            else:
                late.append(-delay * 1000)
            phase = index * every // len(hosts) if spread and every else 0
            bursting = every and tick > 0 and (tick + phase) % every == 0
            for _ in range(burst if bursting else 1):
                host.publish()
        tick += 1
    return late


def start_publishers(hosts: list[SimulatedHost]) -> None:
    """Start the hosts' publishers RAMP at a time, each batch once the one before connected."""
    deadline = time.monotonic() + SETUP_TIMEOUT
    for first in range(0, len(hosts), RAMP):
        batch = hosts[first : first + RAMP]
        for host in batch:
            host.publisher.start()
        # A publisher signals nothing when it connects: its problem clears.
        while any(host.publisher.problem for host in batch):
            if time.monotonic() > deadline:
                raise RuntimeError(f"publishers not connected: {batch[0].publisher.problem}")
            time.sleep(0.05)


def start_subscribers(hosts: list[SimulatedHost], settings: dict) -> list[Subscriber]:
    """Start the hosts' subscribers: each alone, or in groups sharing a connection.

    A group's members are hosts whose URL starts at the same node, and the
    group connects there too: where each host's publisher connects (and, with
    ``client-local``, its queue's leader is), as a host's own consumer would.
    """
    if not settings["shared"]:
        for host in hosts:
            host.subscriber.start()
        return [host.subscriber for host in hosts]
    nodes = len(TransportURL.parse(settings["transport_url"]).hosts)
    groups = []
    for node in range(nodes):
        same_node = hosts[node::nodes]
        for first in range(0, len(same_node), GROUP_SIZE):
            members = [host.subscriber for host in same_node[first : first + GROUP_SIZE]]
            group = SubscriberGroup(starting_at(settings["transport_url"], node), members,
                                    poll_interval=POLL_INTERVAL)  # fmt: skip
            group.start()
            groups.append(group)
    return groups


def publish(hosts: list[SimulatedHost], settings: dict) -> dict:
    start_publishers(hosts)
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        raise RuntimeError("no go")
    late = drive(hosts, settings)
    for host in hosts:
        host.publisher.stop(timeout=SETTLE_TIMEOUT)  # what is still unconfirmed
    return {"hosts": [host.report("publish") for host in hosts], "late_ms": late,
            "cpu_s": time.process_time()}  # fmt: skip


def consume(hosts: list[SimulatedHost], settings: dict) -> dict:
    loops = start_subscribers(hosts, settings)
    for loop in loops:
        if not loop.wait_ready(SETUP_TIMEOUT):
            raise RuntimeError("a subscriber did not get ready")
    print("ready", flush=True)
    expected = json.loads(sys.stdin.readline())
    deadline = time.monotonic() + SETTLE_TIMEOUT
    while time.monotonic() < deadline and any(h.received < expected[h.host] for h in hosts):
        time.sleep(0.1)  # the callbacks run in the subscribers' threads: poll their counts
    stops = [threading.Thread(target=loop.stop) for loop in loops]
    for stop in stops:
        stop.start()
    for stop in stops:
        stop.join()
    return {"hosts": [host.report("consume") for host in hosts], "cpu_s": time.process_time()}


def main() -> int:
    settings = json.loads(sys.stdin.readline())
    hosts = [SimulatedHost(name, settings, index) for index, name in enumerate(settings["hosts"])]
    run = publish if settings["role"] == "publish" else consume
    print(json.dumps(run(hosts, settings)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
