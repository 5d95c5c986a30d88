"""Fixtures for tests against the real RabbitMQ and the real libvirtd.

Each test gets its own exchange, host name (hence per-host queue) and
libvirt domains on the daemon's shared test driver, and removes them after.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import amqp
import libvirt
import pytest

from hypervisor_notifier import wire
from hypervisor_notifier.consumer import LifecycleEvent, Subscriber
from hypervisor_notifier.notifier.outbox import MemoryOutbox
from hypervisor_notifier.notifier.publisher import Publisher
from hypervisor_notifier.signing import Signer
from hypervisor_notifier.tls import BrokerAccess, TLSSettings
from hypervisor_notifier.transport_url import TransportURL
from tests.broker import BROKER_URL, delete_bus, unique
from tests.collector import Collector
from tests.service_process import TIMEOUT, ServiceProcess, write_config

LIBVIRT_URI = os.environ.get("HN_LIBVIRT_URI", "test+unix:///default")
TOPIC = "hypervisor_events"


@pytest.fixture
def broker() -> Iterator[amqp.Channel]:
    """A channel on the real broker, for declaring, inspecting and injecting."""
    connection = amqp.Connection("127.0.0.1:5672", userid="guest", password="guest")
    connection.connect()
    channel = connection.channel()
    yield channel
    connection.close()


@pytest.fixture
def names(broker: amqp.Channel) -> Iterator[dict[str, str]]:
    """A unique exchange and host for this test; their exchange and host queue deleted after."""
    names = {"exchange": unique("hn-test"), "host": unique("fn")}
    yield names
    delete_bus(names["exchange"], [wire.host_queue_name(TOPIC, names["host"])])


# -- libvirt -------------------------------------------------------------------


@pytest.fixture(scope="session")
def hypervisor() -> Iterator[libvirt.virConnect]:
    """A read-write connection to the daemon's test driver (the "other process" acting)."""
    conn = libvirt.open(LIBVIRT_URI)
    yield conn
    conn.close()


NOVA_METADATA = (
    "<metadata><nova:instance xmlns:nova='http://openstack.org/xmlns/libvirt/nova/1.1'>"
    "<nova:name>test-server</nova:name></nova:instance></metadata>"
)
LIBGUESTFS_CHANNEL = (
    "<devices><channel type='unix'><source mode='bind' path='/tmp/guestfsd.sock'/>"
    "<target type='virtio' name='org.libguestfs.channel.0'/></channel></devices>"
)


def domain_xml(name: str, extra: str = NOVA_METADATA) -> str:
    """A test-driver domain; by default one nova launched (it carries nova's metadata)."""
    return (
        f"<domain type='test'><name>{name}</name><memory>8192</memory>"
        f"<os><type>hvm</type></os>{extra}</domain>"
    )


@pytest.fixture
def make_domain(
    hypervisor: libvirt.virConnect,
) -> Iterator[Callable[..., libvirt.virDomain]]:
    """Define shut-off test domains with unique names; destroy and undefine them after.

    ``make_domain()`` defines a nova guest; ``make_domain(extra)`` puts ``extra``
    in its XML instead of nova's metadata.
    """
    created: list[libvirt.virDomain] = []

    def make(extra: str = NOVA_METADATA) -> libvirt.virDomain:
        dom = hypervisor.defineXML(domain_xml(unique("hn-dom"), extra))
        created.append(dom)
        return dom

    yield make
    for dom in created:
        if dom.isActive():
            dom.destroy()
        dom.undefine()


# -- the service process -------------------------------------------------------


@pytest.fixture
def start_service(
    tmp_path: Path, names: dict[str, str]
) -> Iterator[Callable[..., ServiceProcess]]:
    """Start the service with this test's host and exchange; stop it after.

    ``start(transport_url=..., uri=..., env=None, **sections)``:
    ``env`` as :class:`ServiceProcess` takes it.
    """
    started: list[ServiceProcess] = []

    def start(
        *,
        transport_url: str = BROKER_URL,
        uri: str = LIBVIRT_URI,
        prelude: str = "",
        env: dict[str, str] | None = None,
        **sections: dict[str, str],
    ) -> ServiceProcess:
        config = {
            "DEFAULT": {"host": names["host"], "shutdown_timeout": "10"},
            # One outbox per test, shared by its services as on a real host.
            "outbox": {"path": str(tmp_path / "outbox.sqlite")},
            "health": {"port": "0"},
            "libvirt": {"connection_uri": uri, "reconnect_interval_max": "1"},
            "publisher": {
                "transport_url": transport_url,
                "exchange": names["exchange"],
                "reconnect_interval_max": "1",
            },
        }
        for section, values in sections.items():
            config.setdefault(section, {}).update(values)
        path = tmp_path / f"notifier-{len(started)}.conf"
        write_config(path, config)
        service = ServiceProcess(path, prelude=prelude, env=env)
        started.append(service)
        return service

    yield start
    for service in started:
        service.stop()


@pytest.fixture
def private_libvirtd(tmp_path: Path):
    """A libvirtd of this test's own (privatelibvirtd.py): only its guests, its events."""
    from .privatelibvirtd import PrivateLibvirtd

    directory = tmp_path / "libvirtd"
    directory.mkdir()
    daemon = PrivateLibvirtd(directory)
    daemon.start()
    yield daemon
    daemon.stop()


# -- subscribers ---------------------------------------------------------------


@pytest.fixture
def subscribe(names: dict[str, str]) -> Iterator[Callable[..., tuple[Subscriber, Collector]]]:
    """Start a Subscriber (default: this test's host queue) with a Collector; stop it after.

    ``before``, if given, sees each event before the collector and may raise,
    as a failing application callback would. ``transport_url`` defaults to the
    shared broker's.
    """
    subscribers: list[Subscriber] = []

    def start(
        before: Callable[[LifecycleEvent], None] | None = None, **kwargs: object
    ) -> tuple[Subscriber, Collector]:
        collector = Collector()

        def callback(event: LifecycleEvent) -> None:
            if before is not None:
                before(event)
            collector(event)

        kwargs.setdefault("host", names["host"])
        kwargs.setdefault("exchange", names["exchange"])
        url = str(kwargs.pop("transport_url", BROKER_URL))
        subscriber = Subscriber(url, callback, **kwargs)  # type: ignore[arg-type]
        subscriber.start()
        assert subscriber.wait_ready(TIMEOUT), "subscriber did not start consuming"
        subscribers.append(subscriber)
        return subscriber, collector

    yield start
    for subscriber in subscribers:
        subscriber.stop()


# -- the vSphere simulator -----------------------------------------------------


@pytest.fixture(scope="session")
def vcsim_binary() -> str:
    from .vcsim import build

    return build()


@pytest.fixture
def vcsim(vcsim_binary: str, tmp_path: Path):
    """A simulated ESXi host of this test's own, started; stopped after."""
    from .vcsim import Simulator

    simulator = Simulator(vcsim_binary, tmp_path)
    simulator.start()
    yield simulator
    simulator.stop()


# -- in-process publishers -------------------------------------------------------


class ConfirmedPublisher:
    """A real Publisher (memory outbox) started on a broker; :meth:`send` waits for confirms."""

    def __init__(self, publisher: Publisher) -> None:
        self.publisher = publisher
        self._confirmed = 0
        self._changed = threading.Condition()
        publisher.observe_latency = self._on_confirm
        publisher.start()

    def _on_confirm(self, _seconds: float) -> None:
        with self._changed:
            self._confirmed += 1
            self._changed.notify_all()

    def send(self, *events: LifecycleEvent, timeout: float = TIMEOUT) -> None:
        """Put events in the outbox; return once the broker confirmed them all."""
        with self._changed:
            target = self._confirmed + len(events)
        for event in events:
            self.publisher.outbox.put(event)
        with self._changed:
            if not self._changed.wait_for(lambda: self._confirmed >= target, timeout):
                raise AssertionError(f"not confirmed in {timeout} s: {self.publisher.problem}")


@pytest.fixture
def start_publisher(names: dict[str, str]) -> Iterator[Callable[..., ConfirmedPublisher]]:
    """Start in-process Publishers for this test's host and exchange; stop them after.

    ``start_publisher(signer=None, transport_url=BROKER_URL, tls=None, **publisher_kwargs)``.
    """
    started: list[ConfirmedPublisher] = []

    def start(
        *,
        signer: Signer | None = None,
        transport_url: str = BROKER_URL,
        tls: TLSSettings | None = None,
        **kwargs: object,
    ) -> ConfirmedPublisher:
        kwargs.setdefault("host", names["host"])
        kwargs.setdefault("reconnect_interval_max", 1.0)
        publisher = Publisher(
            MemoryOutbox(signer=signer),
            access=BrokerAccess(TransportURL.parse(transport_url), tls or TLSSettings()),
            topology=wire.Topology(names["exchange"], TOPIC),
            **kwargs,  # type: ignore[arg-type]
        )
        started.append(ConfirmedPublisher(publisher))
        return started[-1]

    yield start
    for confirmed in started:
        confirmed.publisher.stop(timeout=5)
        confirmed.publisher.outbox.close()


# -- private RabbitMQ nodes (privaterabbit.py) -------------------------------------


def private_node(tmp_path_factory: pytest.TempPathFactory, *, tls: bool):
    """Start a private node (skip if RabbitMQ is not installed), yield it, stop it.

    For a fixture's ``yield from``: a module whose tests stop or alarm their
    node overrides ``private_broker`` with a module-scoped one of its own, so
    that no other module's test meets it stopped or blocked.
    """
    from .privaterabbit import RABBITMQ_BIN, PrivateRabbit

    if not (RABBITMQ_BIN / "rabbitmq-server").exists():
        pytest.skip(f"no {RABBITMQ_BIN}/rabbitmq-server to start a private node with")
    node = PrivateRabbit(tmp_path_factory.mktemp("tls-rabbit" if tls else "rabbit"), tls=tls)
    try:
        node.start()
        yield node
    finally:
        node.stop()


@pytest.fixture(scope="session")
def tls_broker(tmp_path_factory: pytest.TempPathFactory):
    """A RabbitMQ node of these tests' own, TLS only, certificates made here."""
    yield from private_node(tmp_path_factory, tls=True)


@pytest.fixture(scope="session")
def private_broker(tmp_path_factory: pytest.TempPathFactory):
    """A RabbitMQ node of these tests' own, plain TCP (``.url``): for policies and faults."""
    yield from private_node(tmp_path_factory, tls=False)


@pytest.fixture
def private_names(private_broker, names: dict[str, str]) -> Iterator[dict[str, str]]:
    """``names``, also deleted from the private node after the test."""
    yield names
    with private_broker.channel() as channel:
        channel.queue_delete(wire.host_queue_name(TOPIC, names["host"]))
        channel.exchange_delete(names["exchange"])


@pytest.fixture
def reject_publish(
    private_broker, private_names: dict[str, str]
) -> Iterator[Callable[[int], None]]:
    """``reject_publish(limit)``: the private node nacks publishes to this test's host queue
    beyond ``limit`` messages (a ``max-length`` policy with ``overflow: reject-publish``)."""
    policies = []

    def apply(limit: int) -> None:
        policy = unique("hn-reject")
        pattern = f"^{TOPIC}\\.{private_names['host']}$".replace("-", "\\-")
        private_broker.reject_publish(policy, pattern, limit)
        policies.append(policy)

    yield apply
    for policy in policies:
        private_broker.ctl("clear_policy", policy)
