"""One process of the fleet benchmark: simulated hosts, each a real Publisher and Subscriber.

Not run by hand: ``fleet.py`` starts a few of these. Arguments (JSON on
stdin): the transport URL, exchange, queue type, host names, the event rate
per host, the burst size and period, the duration. Prints ``ready`` once
every host's subscriber consumes, waits for ``go`` on stdin, publishes for
the duration, waits for the stragglers, and prints one JSON object: per
host, what it sent, what its subscriber received (and whether any event was
another host's), and the publish-to-callback latencies in milliseconds.
"""

from __future__ import annotations

import json
import sys
import threading
import time
import uuid

from hypervisor_notifier.consumer import LifecycleEvent, Subscriber
from hypervisor_notifier.events import Observation, PowerState, Transition, utcnow
from hypervisor_notifier.notifier.outbox import MemoryOutbox
from hypervisor_notifier.notifier.publisher import Publisher
from hypervisor_notifier.transport_url import TransportURL

SETTLE_TIMEOUT = 60.0


class SimulatedHost:
    """A compute host's publisher and its own subscriber, on the cluster.

    Arguments:
        host: The host name (routing key and queue).
        settings: The run's settings (URL, exchange, queue type).

    """

    def __init__(self, host: str, settings: dict) -> None:
        self.host = host
        self.guest = str(uuid.uuid4())
        self.sent = 0
        self.seq = 0
        self.latencies: list[float] = []
        self.foreign = 0
        self.received = 0
        url = settings["transport_url"]
        common = {"exchange": settings["exchange"], "topic": settings["topic"],
                  "queue_type": settings["queue_type"]}  # fmt: skip
        self.publisher = Publisher(MemoryOutbox(), url=TransportURL.parse(url), host=host,
                                   reconnect_interval_max=5.0, **common)  # fmt: skip
        self.subscriber = Subscriber(url, self.on_event, host=host, prefetch_count=50, **common)

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
            utcnow(),
        )
        event = LifecycleEvent.from_observation(
            observation, host=self.host, hypervisor="libvirt", seq=self.seq
        )
        self.publisher.outbox.put(event)
        self.sent += 1

    def report(self) -> dict:
        return {"host": self.host, "sent": self.sent, "received": self.received,
                "foreign": self.foreign, "latencies_ms": self.latencies,
                "resent": self.publisher.resent}  # fmt: skip


def drive(hosts: list[SimulatedHost], settings: dict) -> None:
    """Each host one event per 1/rate s, spread over the period, plus a burst now and then."""
    period = 1.0 / settings["rate"]
    burst, every = settings["burst"], settings["burst_every"]
    started = time.monotonic()
    tick = 0
    while time.monotonic() - started < settings["duration"]:
        for index, host in enumerate(hosts):
            # Spread the hosts over the period, as independent hosts would be.
            due = started + tick * period + index * period / len(hosts)
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            count = burst if every and tick and tick % every == 0 else 1
            for _ in range(count):
                host.publish()
        tick += 1


def main() -> int:
    settings = json.loads(sys.stdin.readline())
    hosts = [SimulatedHost(name, settings) for name in settings["hosts"]]
    for host in hosts:
        host.subscriber.start()
        host.publisher.start()
    for host in hosts:
        if not host.subscriber.wait_ready(120):
            raise RuntimeError(f"{host.host}: subscriber not ready")
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        return 1
    drive(hosts, settings)
    deadline = time.monotonic() + SETTLE_TIMEOUT
    while time.monotonic() < deadline and any(h.received < h.sent for h in hosts):
        time.sleep(0.1)  # the callbacks run in the subscribers' threads: poll their counts
    stop = threading.Thread(target=lambda: [h.subscriber.stop() for h in hosts])
    stop.start()
    for host in hosts:
        host.publisher.stop(timeout=5)
    stop.join()
    print(json.dumps([host.report() for host in hosts]), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
