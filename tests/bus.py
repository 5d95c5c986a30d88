"""The real bus for the nova and end-to-end tests: our real Publisher, unique names, cleaned up."""

from __future__ import annotations

import itertools
import os
from typing import Any

import amqp
import fixtures

from hypervisor_notifier import wire
from hypervisor_notifier.consumer import nova as adapter
from hypervisor_notifier.events import LifecycleEvent, PowerState, Transition
from hypervisor_notifier.notifier.outbox import MemoryOutbox
from hypervisor_notifier.notifier.publisher import Publisher
from hypervisor_notifier.signing import Signer
from hypervisor_notifier.tls import BrokerAccess
from hypervisor_notifier.transport_url import TransportURL
from tests.broker import BROKER_URL, delete_bus, unique
from tests.broker import connection as broker_connection
from tests.factories import make_event

TIMEOUT = 30.0


class Bus(fixtures.Fixture):
    """A unique exchange and topic on the real RabbitMQ, and a publisher for ``host``.

    Arguments:
        host: The compute host the events name (nova's ``CONF.host``).
        signer: What the host's notifier signs with (None: it does not sign).

    """

    def __init__(self, host: str, signer: Signer | None = None) -> None:
        super().__init__()
        self.host = host
        self.signer = signer
        self.exchange = unique("hn-nova-test")
        self.topic = unique("hn_events")
        self._seq = itertools.count(1)

    def _setUp(self) -> None:
        self.addCleanup(self._delete)
        self.publishers: dict[str, Publisher] = {}
        self.hosts: set[str] = set()
        # The adapter's state file: never in nova's default state_path (the environment).
        self.state_dir = self.useFixture(fixtures.TempDir()).path
        self.publisher_for(self.host)

    def publisher_for(self, host: str) -> Publisher:
        """Our real publisher for ``host`` (started once), as a notifier on that host runs it."""
        if host not in self.publishers:
            self.publishers[host] = self.start_publisher(host, self.signer)
        return self.publishers[host]

    def start_publisher(self, host: str, signer: Signer | None) -> Publisher:
        """Another real publisher for ``host`` signing with ``signer`` (stopped at cleanup)."""
        publisher = Publisher(
            MemoryOutbox(signer=signer),
            access=BrokerAccess(TransportURL.parse(BROKER_URL)),
            host=host,
            topology=wire.Topology(self.exchange, self.topic),
        )
        publisher.start()
        self.addCleanup(publisher.stop, 5.0)
        self.hosts.add(host)
        return publisher

    def event(self, **fields: Any) -> LifecycleEvent:
        """A lifecycle event of this host with the next seq; any field can be overridden."""
        fields.setdefault("host", self.host)
        fields.setdefault("seq", next(self._seq))
        return make_event(**fields)

    def publish(self, event: LifecycleEvent) -> None:
        """Publish ``event`` as the notifier of the host it names does."""
        self.publisher_for(event.host).outbox.put(event)

    def publish_guest_shutdown(self, instance_uuid: str) -> None:
        """Publish what libvirt reports when the guest runs ``shutdown -h now``."""
        self.publish(
            self.event(
                instance_uuid=instance_uuid,
                transition=Transition.SHUTTING_DOWN,
                power_state=PowerState.RUNNING,
                reason="SHUTDOWN",
                detail="GUEST",
            )
        )
        self.publish(self.event(instance_uuid=instance_uuid, reason="STOPPED", detail="SHUTDOWN"))

    def inject(self, event: LifecycleEvent, *, routed_as: str, signer: Signer | None) -> None:
        """Publish ``event`` from outside any notifier, with ``routed_as``'s routing key."""
        with broker_connection() as connection:
            channel = connection.channel()
            channel.confirm_select()
            channel.basic_publish_confirm(
                amqp.Message(
                    wire.encode(event, signer), content_type=wire.CONTENT_TYPE, delivery_mode=2
                ),
                exchange=self.exchange,
                routing_key=wire.routing_key(self.topic, routed_as),
            )

    def adapter_flags(self, **overrides: Any) -> dict[str, Any]:
        """``[hypervisor_notifier]`` settings that point the adapter at this bus."""
        return {
            "transport_url": BROKER_URL,
            "exchange": self.exchange,
            "topic": self.topic,
            "state_file": os.path.join(self.state_dir, "consumer.sqlite"),
            **overrides,
        }

    def _delete(self) -> None:
        delete_bus(self.exchange, [wire.host_queue_name(self.topic, h) for h in self.hosts])


def stop_sources() -> None:
    """Stop every adapter nova started (nova-compute stops them at cleanup_host)."""
    while adapter.SOURCES:
        _, source = adapter.SOURCES.popitem()
        source.stop()
