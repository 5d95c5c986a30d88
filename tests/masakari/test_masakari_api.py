"""The masakari consumer against masakari's real API (22.0.0 from PyPI) and the real RabbitMQ.

Events go through this project's real Publisher to RabbitMQ, the
MasakariConsumer reads them from its durable queue and hands guest failures
to masakari-api; the tests read back what masakari accepted and give its
payload to masakari's own engine code (``instance_events``), which decides
whether masakari recovers the guest.
"""

from __future__ import annotations

import tempfile
import threading
import time
import unittest
from pathlib import Path

from keystoneauth1 import adapter, noauth, session
from masakari.engine import instance_events

from hypervisor_notifier import wire
from hypervisor_notifier.consumer import masakari
from hypervisor_notifier.events import PowerState, Transition
from hypervisor_notifier.notifier.outbox import MemoryOutbox
from hypervisor_notifier.notifier.publisher import Publisher
from hypervisor_notifier.transport_url import TransportURL
from tests.broker import BROKER_URL, delete_bus, unique
from tests.factories import make_event

from .masakari_api import MasakariAPI

TOPIC = "hypervisor_events"
TIMEOUT = 60.0


def failure(host: str, **fields: object):
    """A guest of ``host`` stopped by a failure (libvirt STOPPED/FAILED)."""
    return make_event(host=host, transition=Transition.STOPPED, power_state=PowerState.SHUTDOWN,
                      reason="STOPPED", detail="FAILED", **fields)  # fmt: skip


class MasakariConsumerTest(unittest.TestCase):
    def setUp(self) -> None:
        temp = tempfile.TemporaryDirectory(prefix="hn-masakari-")
        self.addCleanup(temp.cleanup)
        self.api = MasakariAPI(Path(temp.name))
        self.host = unique("compute")
        self.api.register_host(self.host)
        self.api.start()
        self.addCleanup(self.api.stop)
        self.exchange, queue = unique("hn-masakari"), unique("hypervisor_events.masakari")
        self.addCleanup(delete_bus, self.exchange,
                        [queue, wire.host_queue_name(TOPIC, self.host)])  # fmt: skip
        auth = noauth.NoAuth(endpoint=self.api.url)
        client = masakari.MasakariClient(
            adapter.Adapter(session.Session(auth=auth), service_type="instance-ha"),
            retry_interval_max=0.5,
        )
        self.consumer = masakari.MasakariConsumer(client, BROKER_URL, queue,
                                                  exchange=self.exchange, topic=TOPIC)  # fmt: skip
        self.consumer.start()
        self.addCleanup(self.consumer.stop)
        self.assertTrue(self.consumer.wait_ready(TIMEOUT))
        url = TransportURL.parse(BROKER_URL)
        self.publisher = Publisher(MemoryOutbox(), url=url, host=self.host,
                                   exchange=self.exchange, topic=TOPIC)  # fmt: skip
        self.publisher.start()
        self.addCleanup(self.publisher.stop, 5)

    def wait_for(self, condition, what: str) -> None:
        deadline = time.monotonic() + TIMEOUT
        while not condition():
            self.assertLess(time.monotonic(), deadline, f"timed out waiting for {what}")
            time.sleep(0.1)  # masakari's database: nothing to be notified by

    def test_a_guest_failure_becomes_a_notification_masakaris_engine_acts_on(self):
        crashed = failure(self.host)
        resumed = make_event(
            host=self.host,
            transition=Transition.RESUMED,
            power_state=PowerState.RUNNING,
            reason="RESUMED",
            detail="UNPAUSED",
        )
        shut_down = make_event(host=self.host, reason="STOPPED", detail="SHUTDOWN")
        for event in (resumed, shut_down, crashed):
            self.publisher.outbox.put(event)

        self.wait_for(lambda: self.api.notifications(self.host), "masakari's notification")
        self.wait_for(lambda: self.consumer.stats.ignored == 2, "the other events handled")

        (notification,) = self.api.notifications(self.host)
        self.assertEqual(notification["type"], "VM")
        self.assertEqual(notification["payload"], {
            "event": "LIFECYCLE", "instance_uuid": crashed.instance_uuid,
            "vir_domain_event": "STOPPED_FAILED"})  # fmt: skip
        self.assertTrue(instance_events.is_valid_event(notification["payload"]))
        self.assertEqual(self.consumer.stats.notified, 1)

    def test_failures_while_masakari_is_down_all_arrive_once_it_is_back(self):
        self.api.stop()
        failures = [failure(self.host) for _ in range(3)]
        for event in failures:
            self.publisher.outbox.put(event)
        # The first is being retried: nothing is acknowledged meanwhile.
        self.wait_for(lambda: self.consumer.client.retries >= 3, "retries")
        self.assertEqual(self.consumer.stats.notified, 0)

        restart = threading.Thread(target=self.api.start)
        restart.start()
        restart.join()

        self.wait_for(lambda: len(self.api.notifications(self.host)) == 3, "3 notifications")
        accepted = [n["payload"]["instance_uuid"] for n in self.api.notifications(self.host)]
        self.assertEqual(accepted, [event.instance_uuid for event in failures])
        self.assertEqual(self.consumer.stats.notified, 3)
        self.assertEqual(self.consumer.stats.refused, 0)
