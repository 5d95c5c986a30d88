"""What publisher and subscribers agree on (wire.Topology), and how every client connects."""

from __future__ import annotations

import pytest

from hypervisor_notifier import conf as config
from hypervisor_notifier import wire
from hypervisor_notifier.consumer import Subscriber
from hypervisor_notifier.notifier.outbox import MemoryOutbox
from hypervisor_notifier.notifier.publisher import Publisher
from hypervisor_notifier.tls import BrokerAccess, TLSSettings
from hypervisor_notifier.transport_url import TransportURL


def test_a_topology_names_what_the_wire_contract_names():
    topology = wire.Topology("hv", "hv_events", "quorum")

    assert topology.routing_key("compute1.example.org") == "hv_events.compute1.example.org.info"
    assert topology.binding_key("compute1") == wire.routing_key("hv_events", "compute1")
    assert topology.binding_key(None) == "hv_events.#"
    assert topology.host_queue("compute1") == wire.host_queue_name("hv_events", "compute1")
    assert topology.queue_arguments == {"x-queue-type": "quorum"}
    assert wire.Topology().queue_arguments == {}


def test_an_unknown_queue_type_is_refused_before_any_broker_is_asked():
    with pytest.raises(ValueError, match="queue type 'stream' is not one of classic, quorum"):
        wire.Topology(queue_type="stream")


@pytest.mark.parametrize("queue_type", wire.QUEUE_TYPES)
def test_a_hosts_subscriber_declares_and_binds_what_its_publisher_does(queue_type):
    # Else the broker refuses the second declaration (PRECONDITION_FAILED) or routes nowhere.
    url = "rabbit://guest:guest@127.0.0.1:5672/"
    topology = wire.Topology("hv", "t", queue_type)
    publisher = Publisher(MemoryOutbox(), access=BrokerAccess(TransportURL.parse(url)),
                          host="compute1", topology=topology)  # fmt: skip
    subscriber = Subscriber(url, print, host="compute1", exchange="hv", topic="t",
                            queue_type=queue_type)  # fmt: skip

    assert subscriber.topology == publisher.topology
    assert subscriber.queue_name == publisher.queue_name == "t.compute1"
    assert subscriber.binding_key == publisher.routing_key


def test_the_service_publishes_with_the_configured_names_and_queue_type(tmp_path):
    path = tmp_path / "hypervisor-notifier.conf"
    path.write_text(
        "[DEFAULT]\nhost = compute7\n[oslo_messaging_rabbit]\nrabbit_quorum_queue = true\n"
        "[publisher]\nexchange = hv\ntopic = hv_events\n"
    )

    publisher = Publisher.from_conf(config.load(["--config-file", str(path)], prog="test"),
                                    MemoryOutbox())  # fmt: skip

    assert publisher.topology == wire.Topology("hv", "hv_events", "quorum")
    assert publisher.routing_key == "hv_events.compute7.info"


def test_tls_is_used_exactly_when_the_url_asks_for_it(tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    tls = TLSSettings(str(ca))
    plain = BrokerAccess(TransportURL.parse("rabbit://u:p@a:5672,u:p@b:5672/"), tls)
    secured = BrokerAccess(TransportURL.parse("rabbit://u:p@a:5671,u:p@b:5671/?ssl=1"), tls)

    assert [plain.amqp_ssl(broker) for broker in plain.url.hosts] == [False, False]
    # Each host's certificate is checked against that host's name.
    options = [secured.amqp_ssl(broker) for broker in secured.url.hosts]
    assert [option["server_hostname"] for option in options] == ["a", "b"]  # type: ignore[index]
    assert all(option["ca_certs"] == str(ca) for option in options)  # type: ignore[index]
    # No files given: the system's CA store, still verified.
    assert "ca_certs" not in BrokerAccess(secured.url).amqp_ssl(secured.url.hosts[0])  # type: ignore[operator]
