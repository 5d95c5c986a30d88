"""The masakari consumer against masakari's real API (22.0.0 from PyPI) and the real RabbitMQ.

Events (lifecycle, guest faults, host events) go through this project's
real Publisher to RabbitMQ, the MasakariConsumer reads them from its durable
queue and hands guest failures to masakari-api; the tests read back what
masakari accepted and give its payload to masakari's own engine code
(``instance_events``), which decides whether masakari recovers the guest.
"""

from __future__ import annotations

import tempfile
import threading
import time
import unittest
from pathlib import Path

import amqp
from keystoneauth1 import adapter, noauth, session
from masakari.engine import instance_events

from hypervisor_notifier import wire
from hypervisor_notifier.consumer import masakari
from hypervisor_notifier.consumer.masakari import Outcome
from hypervisor_notifier.events import PowerState, Transition
from hypervisor_notifier.faults import Fault
from hypervisor_notifier.host_events import HostChange
from hypervisor_notifier.notifier.outbox import MemoryOutbox
from hypervisor_notifier.notifier.publisher import Publisher
from hypervisor_notifier.tls import BrokerAccess
from hypervisor_notifier.transport_url import TransportURL
from tests.broker import BROKER_URL, connection, delete_bus, unique
from tests.factories import make_event, make_fault, make_host_event

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
        self.queue = queue
        self.consumer = self.start_consumer()
        url = TransportURL.parse(BROKER_URL)
        self.publisher = Publisher(MemoryOutbox(), access=BrokerAccess(url), host=self.host,
                                   topology=wire.Topology(self.exchange, TOPIC))  # fmt: skip
        self.publisher.start()
        self.addCleanup(self.publisher.stop, 5)

    def start_consumer(self) -> masakari.MasakariConsumer:
        """A MasakariConsumer of the test's queue, consuming; stopped at cleanup."""
        auth = noauth.NoAuth(endpoint=self.api.url)
        client = masakari.MasakariClient(
            adapter.Adapter(session.Session(auth=auth), service_type="instance-ha"),
            retry_interval_max=0.5,
        )
        consumer = masakari.MasakariConsumer(client, BROKER_URL, self.queue,
                                             exchange=self.exchange, topic=TOPIC)  # fmt: skip
        consumer.start()
        self.addCleanup(consumer.stop)
        self.assertTrue(consumer.wait_ready(TIMEOUT))
        return consumer

    def publish(self, *events) -> None:
        """Put ``events`` in the publisher's outbox, in order."""
        for event in events:
            self.publisher.outbox.put(event)

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
        stats = self.consumer.stats
        self.wait_for(lambda: stats[Outcome.IGNORED] == 2, "the other events handled")

        (notification,) = self.api.notifications(self.host)
        self.assertEqual(notification["type"], "VM")
        self.assertEqual(notification["payload"], {
            "event": "LIFECYCLE", "instance_uuid": crashed.instance_uuid,
            "vir_domain_event": "STOPPED_FAILED"})  # fmt: skip
        self.assertTrue(instance_events.is_valid_event(notification["payload"]))
        self.assertEqual(self.consumer.stats[Outcome.NOTIFIED], 1)

    def test_failures_while_masakari_is_down_all_arrive_once_it_is_back(self):
        self.api.stop()
        failures = [failure(self.host) for _ in range(3)]
        for event in failures:
            self.publisher.outbox.put(event)
        # The first is being retried: nothing is acknowledged meanwhile.
        self.wait_for(lambda: self.consumer.client.retries >= 3, "retries")
        self.assertEqual(self.consumer.stats[Outcome.NOTIFIED], 0)

        restart = threading.Thread(target=self.api.start)
        restart.start()
        restart.join()

        self.wait_for(lambda: len(self.api.notifications(self.host)) == 3, "3 notifications")
        accepted = [n["payload"]["instance_uuid"] for n in self.api.notifications(self.host)]
        self.assertEqual(accepted, [event.instance_uuid for event in failures])
        self.assertEqual(self.consumer.stats[Outcome.NOTIFIED], 3)
        self.assertEqual(self.consumer.stats[Outcome.REFUSED], 0)

    def test_guest_faults_become_the_notifications_masakaris_engine_acts_on_and_nothing_else(self):
        seq = iter(range(1, 100))
        on_host = {"host": self.host}
        agent = make_fault(Fault.AGENT_CONNECTED, detail="CHANNEL", seq=next(seq), **on_host)
        lost = make_host_event(HostChange.DISCONNECTED, seq=next(seq), **on_host)
        io_error = make_fault(
            Fault.IO_ERROR,
            "report",
            seq=next(seq),
            **on_host,
            details={"action": "report", "device": "vda", "error": "enospc"},
        )
        io_paused = make_fault(Fault.IO_ERROR, "pause", seq=next(seq), **on_host)
        watchdog = make_fault(Fault.WATCHDOG, "reset", seq=next(seq), **on_host)
        # A panic, then (nova's on_crash=destroy) the stop of the same crash.
        crashed = make_event(
            transition=Transition.CRASHED,
            power_state=PowerState.CRASHED,
            reason="CRASHED",
            detail="PANICKED",
            seq=next(seq),
            **on_host,
        )
        destroyed = make_event(
            instance_uuid=crashed.instance_uuid,
            reason="STOPPED",
            detail="CRASHED",
            seq=next(seq),
            **on_host,
        )
        back = make_host_event(HostChange.CONNECTED, seq=next(seq), **on_host)
        self.publish(agent, lost, io_error, io_paused, watchdog, crashed, destroyed, back)

        stats = self.consumer.stats
        handled = (Outcome.IGNORED, Outcome.NOTIFIED, Outcome.DUPLICATE)
        self.wait_for(lambda: sum(stats[outcome] for outcome in handled) == 8,
                      "every event handled")  # fmt: skip

        accepted = self.api.notifications(self.host)
        self.assertEqual([n["payload"] for n in accepted], [
            {"event": "IO_ERROR", "instance_uuid": io_error.instance_uuid,
             "vir_domain_event": "IO_ERROR_REPORT"},
            {"event": "LIFECYCLE", "instance_uuid": watchdog.instance_uuid,
             "vir_domain_event": "STOPPED_FAILED"},
            {"event": "LIFECYCLE", "instance_uuid": crashed.instance_uuid,
             "vir_domain_event": "STOPPED_FAILED"},
        ])  # fmt: skip
        for notification in accepted:
            self.assertTrue(instance_events.is_valid_event(notification["payload"]))
        # The agent, both host events and the paused guest: no notification.
        self.assertEqual(stats[Outcome.IGNORED], 4)
        # masakari itself took the crash's stop for the notification it already had (409).
        self.assertEqual(stats[Outcome.DUPLICATE], 1)
        self.assertEqual(self.consumer.subscriber.stats.skipped, 0)

    def test_faults_wait_for_masakari_across_a_consumer_restart_in_order_once(self):
        self.api.stop()
        on_host = {"host": self.host}
        io_error = make_fault(Fault.IO_ERROR, "report", seq=1, **on_host)
        agent = make_fault(Fault.AGENT_DISCONNECTED, detail="CHANNEL", seq=2, **on_host)
        watchdog = make_fault(Fault.WATCHDOG, "poweroff", seq=3, **on_host)
        stopped = failure(self.host, seq=4)
        self.publish(io_error, agent, watchdog, stopped)
        # The io_error once more (as a publisher's resend would): delivered once.
        self.wait_for(lambda: len(self.publisher.outbox) == 0, "the events on the queue")
        resend = amqp.Message(
            wire.encode(io_error), content_type=wire.CONTENT_TYPE, delivery_mode=2
        )
        with connection() as conn:
            conn.channel().basic_publish(resend, routing_key=self.queue)
        self.wait_for(lambda: self.consumer.client.retries >= 2, "retries")
        # This consumer gives up waiting: what it held was not acknowledged.
        self.consumer.stop()
        self.assertEqual(self.consumer.stats[Outcome.NOTIFIED], 0)

        consumer = self.start_consumer()
        self.wait_for(lambda: consumer.client.retries >= 1, "the next consumer's retries")
        self.api.start()

        self.wait_for(lambda: consumer.subscriber.stats.duplicates == 1, "the resend dropped")
        accepted = [(n["payload"]["instance_uuid"], n["payload"]["event"])
                    for n in self.api.notifications(self.host)]  # fmt: skip
        self.assertEqual(accepted, [(io_error.instance_uuid, "IO_ERROR"),
                                    (watchdog.instance_uuid, "LIFECYCLE"),
                                    (stopped.instance_uuid, "LIFECYCLE")])  # fmt: skip
        self.assertEqual((consumer.stats[Outcome.NOTIFIED], consumer.stats[Outcome.IGNORED]),
                         (3, 1))  # fmt: skip
        self.assertEqual(consumer.stats[Outcome.DUPLICATE] + consumer.stats[Outcome.REFUSED], 0)
