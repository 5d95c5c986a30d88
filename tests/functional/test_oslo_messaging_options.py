"""The real service reads oslo.messaging's groups where [publisher] is unset, as kolla writes them.

Against the real broker (and the private TLS node for ``[oslo_messaging_rabbit] ssl``).
"""

from __future__ import annotations

import uuid

import amqp
import pytest

from hypervisor_notifier import wire
from hypervisor_notifier.events import Transition
from tests.functional.conftest import BROKER_URL, TOPIC

#: Nothing listens there: a service that used it would never connect.
NOWHERE = "rabbit://guest:guest@127.0.0.1:1/"


def test_the_notifications_url_is_used_before_the_default_one(
    start_service, subscribe, make_domain
):
    dom = make_domain()
    _, collector = subscribe()
    service = start_service(
        transport_url="",  # [publisher] transport_url unset
        DEFAULT={"transport_url": NOWHERE},
        oslo_messaging_notifications={"transport_url": BROKER_URL},
    )

    line = service.wait_for_log("broker: transport_url")[0]
    assert "transport_url rabbit://guest:****@127.0.0.1:5672/" in line
    assert "from [oslo_messaging_notifications] transport_url" in line
    service.wait_for_log("resync (connected)")
    dom.create()
    collector.wait_for(
        lambda e: e.instance_uuid == dom.UUIDString() and e.transition is Transition.STARTED
    )


def test_default_transport_url_then_rabbit_options(start_service, broker, names):
    service = start_service(
        transport_url="",
        DEFAULT={"transport_url": BROKER_URL},
        oslo_messaging_rabbit={"rabbit_quorum_queue": "true", "heartbeat_timeout_threshold": "7"},
    )

    line = service.wait_for_log("broker: transport_url")[0]
    assert "from [DEFAULT] transport_url" in line
    assert "queue_type quorum from [oslo_messaging_rabbit] rabbit_quorum_queue" in line
    assert "heartbeat 7 from [oslo_messaging_rabbit] heartbeat_timeout_threshold" in line
    service.wait_for_log("connected to broker guest@127.0.0.1:5672")
    # The host queue is a quorum queue: declaring it classic is refused.
    queue = wire.host_queue_name(TOPIC, names["host"])
    declare = {"durable": True, "auto_delete": False}
    broker.queue_declare(queue, **declare, arguments={"x-queue-type": "quorum"})
    refused = broker.connection.channel()  # a refused declaration closes its channel
    with pytest.raises(amqp.exceptions.PreconditionFailed):
        refused.queue_declare(queue, **declare, arguments={"x-queue-type": "classic"})


def test_publisher_options_win_over_oslo_messaging(start_service):
    service = start_service(
        oslo_messaging_notifications={"transport_url": NOWHERE},
        oslo_messaging_rabbit={"rabbit_quorum_queue": "true"},
        publisher={"queue_type": "classic", "heartbeat": "5"},
    )

    line = service.wait_for_log("broker: transport_url")[0]
    assert "from [publisher] transport_url" in line
    assert "queue_type classic from [publisher] queue_type" in line
    service.wait_for_log("connected to broker guest@127.0.0.1:5672")


def test_oslo_messaging_rabbit_ssl_and_files_connect_with_tls_and_verification(
    tls_broker, start_service, subscribe, make_domain
):
    user, password = f"hn-oslo-{uuid.uuid4().hex[:8]}", f"pw-{uuid.uuid4().hex}"
    tls_broker.ctl("add_user", user, password)
    tls_broker.ctl("set_permissions", user, ".*", ".*", ".*")
    try:
        # As kolla renders it: a plain rabbit:// URL to the TLS port, TLS switched on
        # and its files in [oslo_messaging_rabbit].
        url = f"rabbit://{user}:{password}@localhost:{tls_broker.port}/"
        tls_files = {
            "ssl_ca_file": tls_broker.path("ca.pem"),
            "ssl_cert_file": tls_broker.path("client.pem"),
            "ssl_key_file": tls_broker.path("client.key"),
        }
        dom = make_domain()
        _, collector = subscribe(transport_url=url + "?ssl=1", **tls_files)
        service = start_service(
            transport_url="",
            oslo_messaging_notifications={"transport_url": url},
            oslo_messaging_rabbit={"ssl": "true", **tls_files},
        )

        line = service.wait_for_log("broker: transport_url")[0]
        assert "TLS on from [oslo_messaging_rabbit] ssl" in line
        assert "ssl_ca_file" in line and "from [oslo_messaging_rabbit] ssl_ca_file" in line
        service.wait_for_log(f"connected to broker {user}@localhost:{tls_broker.port}")
        service.wait_for_log("resync (connected)")
        dom.create()
        collector.wait_for(
            lambda e: e.instance_uuid == dom.UUIDString() and e.transition is Transition.STARTED
        )
        assert password not in service.log
    finally:
        tls_broker.ctl("delete_user", user)


def test_oslo_messaging_rabbit_ssl_without_the_ca_refuses_the_broker(tls_broker, start_service):
    url = f"rabbit://guest:guest@localhost:{tls_broker.port}/"
    service = start_service(
        transport_url="",
        oslo_messaging_notifications={"transport_url": url},
        oslo_messaging_rabbit={"ssl": "true"},  # the system's CAs do not know the test's CA
    )

    service.wait_for_log("the broker's certificate is not trusted")
