"""A nova.conf rendered the way kolla-ansible renders it runs the adapter over verified TLS.

kolla-ansible puts the notification broker in ``[oslo_messaging_notifications]
transport_url`` (a ``rabbit://`` URL) and TLS in ``[oslo_messaging_rabbit]
ssl = true`` + ``ssl_ca_file``; nothing in ``[hypervisor_notifier]`` but the
bus names. The broker is a private RabbitMQ node with a TLS listener only
(tests/functional/privaterabbit.py); the events come from our real
Publisher over TLS and reach nova's event type.
"""

import logging
import queue
import shutil
import tempfile
import textwrap
import threading
import uuid
from pathlib import Path
from typing import Any

import fixtures
import nova.conf.netconf
import nova.conf.paths
from nova import test
from nova.virt import event as virtevent
from oslo_config import cfg

from hypervisor_notifier import wire
from hypervisor_notifier.conf import nova as nova_conf
from hypervisor_notifier.consumer import nova as adapter
from hypervisor_notifier.notifier.outbox import MemoryOutbox
from hypervisor_notifier.notifier.publisher import Publisher
from hypervisor_notifier.tls import BrokerAccess, TLSSettings
from hypervisor_notifier.transport_url import TransportURL
from tests import bus
from tests.factories import make_event
from tests.functional.privaterabbit import RABBITMQ_BIN, PrivateRabbit

PASSWORD = f"pw-{uuid.uuid4().hex}"


class KollaRenderedNovaConfTest(test.NoDBTestCase):
    rabbit: PrivateRabbit

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        if not (RABBITMQ_BIN / "rabbitmq-server").exists():
            raise cls.skipException(f"no {RABBITMQ_BIN}/rabbitmq-server")
        cls.directory = tempfile.mkdtemp(prefix="hn-kolla-")
        cls.rabbit = PrivateRabbit(Path(cls.directory))
        try:
            cls.rabbit.start()
            cls.rabbit.ctl("add_user", "openstack", PASSWORD)
            cls.rabbit.ctl("set_permissions", "openstack", ".*", ".*", ".*")
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls) -> None:
        cls.rabbit.stop()
        shutil.rmtree(cls.directory, ignore_errors=True)
        super().tearDownClass()

    def setUp(self) -> None:
        super().setUp()
        self.host = bus.unique("kolla-compute")
        self.exchange = bus.unique("hn-kolla")
        self.topic = bus.unique("hn_events")
        self.state_path = self.useFixture(fixtures.TempDir()).path
        self.logs = self.useFixture(fixtures.FakeLogger(level=logging.INFO))
        self.received: queue.Queue[Any] = queue.Queue()

    def _nova_conf(self, ca: str) -> cfg.ConfigOpts:
        """nova's options read from a nova.conf as kolla-ansible renders it."""
        url = f"rabbit://openstack:{PASSWORD}@localhost:{self.rabbit.port}//"
        path = Path(self.state_path) / "nova.conf"
        path.write_text(
            textwrap.dedent(
                f"""\
                [DEFAULT]
                host = {self.host}
                state_path = {self.state_path}
                transport_url = {url}

                [oslo_messaging_notifications]
                transport_url = {url}
                driver = messagingv2
                topics = notifications

                [oslo_messaging_rabbit]
                heartbeat_in_pthread = false
                ssl = true
                ssl_ca_file = {self.rabbit.path(ca)}
                ssl_cert_file = {self.rabbit.path("client.pem")}
                ssl_key_file = {self.rabbit.path("client.key")}

                [hypervisor_notifier]
                exchange = {self.exchange}
                topic = {self.topic}
                """
            )
        )
        conf = cfg.ConfigOpts()
        nova.conf.netconf.register_opts(conf)
        nova.conf.paths.register_opts(conf)
        conf.register_opts(nova_conf.all_opts, group=nova_conf.GROUP)
        conf(["--config-file", str(path)], project="nova")
        return conf

    def _start(self, ca: str) -> adapter.NovaEventSource:
        source = adapter.NovaEventSource.from_conf(self._nova_conf(ca), self.received.put)
        source.start()
        self.addCleanup(source.stop)
        return source

    def _publisher(self) -> Publisher:
        """The host's notifier, publishing over TLS to the private node."""
        publisher = Publisher(
            MemoryOutbox(),
            access=BrokerAccess(
                TransportURL.parse(
                    f"rabbits://openstack:{PASSWORD}@localhost:{self.rabbit.port}/"
                ),
                TLSSettings(
                    self.rabbit.path("ca.pem"),
                    self.rabbit.path("client.pem"),
                    self.rabbit.path("client.key"),
                ),
            ),
            host=self.host,
            topology=wire.Topology(self.exchange, self.topic),
        )
        publisher.start()
        self.addCleanup(publisher.stop, 5.0)
        return publisher

    def test_the_adapter_connects_with_tls_verified_and_hands_events_to_nova(self) -> None:
        source = self._start("ca.pem")
        self.assertTrue(source.wait_ready(bus.TIMEOUT), self.logs.output)
        instance = str(uuid.uuid4())

        self._publisher().outbox.put(
            make_event(host=self.host, instance_uuid=instance, reason="VmGuestShutdownEvent")
        )
        handed = self.received.get(timeout=bus.TIMEOUT)

        self.assertIsInstance(handed, virtevent.LifecycleEvent)
        self.assertEqual(
            (instance, virtevent.EVENT_LIFECYCLE_STOPPED), (handed.uuid, handed.transition)
        )
        self.assertTrue(source.subscriber.url.tls)
        for expected in (
            "transport_url from [oslo_messaging_notifications] transport_url",
            "TLS from [oslo_messaging_rabbit] ssl",
            "ssl_ca_file from [oslo_messaging_rabbit] ssl_ca_file",
        ):
            self.assertIn(expected, source.sources)
        self.assertNotIn(PASSWORD, source.sources + self.logs.output)

    def test_a_broker_certificate_the_ca_did_not_sign_is_refused(self) -> None:
        refused = threading.Event()

        class Refusals(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                if "the broker's certificate is not trusted" in record.getMessage():
                    refused.set()

        handler = Refusals()
        logging.getLogger("hypervisor_notifier").addHandler(handler)
        self.addCleanup(logging.getLogger("hypervisor_notifier").removeHandler, handler)
        source = self._start("other-ca.pem")

        self.assertTrue(refused.wait(bus.TIMEOUT), self.logs.output)
        self.assertFalse(source.wait_ready(0))
        self.assertNotIn(PASSWORD, self.logs.output)
