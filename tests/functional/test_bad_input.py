"""Bad input gets a clear error and loses nothing: real process, broker and daemon."""

from __future__ import annotations

import json
import subprocess
import uuid

import amqp
import pytest

from hypervisor_notifier import wire
from hypervisor_notifier.events import Transition
from tests.factories import make_event

from .conftest import TIMEOUT, TOPIC, unique
from .sockproxy import UnixSocketProxy

LIBVIRTD_SOCKET = "/var/run/libvirt/libvirt-sock"


@pytest.mark.parametrize(
    ("section", "option", "value", "message"),
    [
        ("DEFAULT", "backend", "nonesuch", "unknown backend 'nonesuch' in [DEFAULT] backend; "
                                           "installed backends: esx, libvirt"),
        ("publisher", "confirm_window", "lots", "confirm_window"),
        ("publisher", "transport_url", "kafka://broker:9092", "[publisher] transport_url"),
        ("libvirt", "connection_uri", "not a uri", "[libvirt] connection_uri"),
        ("signing", "key", "short", "[signing] signing key '1' is 5 bytes long; at least 32"),
        ("signing", "key_file", "/nonexistent/key", "[signing] key_file '/nonexistent/key'"),
        ("publisher", "ssl_ca_file", "/nonexistent/ca.pem",
         "[publisher] ssl_ca_file '/nonexistent/ca.pem': no such file"),
    ],
)  # fmt: skip
def test_bad_configuration_exits_with_one_clear_line(
    start_service, section, option, value, message
):
    service = start_service(**{section: {option: value}})
    assert service.process.wait(TIMEOUT) == 2
    service.stop()
    assert len(service.lines) == 1, service.log
    assert service.lines[0].startswith("hypervisor-notifier: error: ")
    assert message in service.lines[0]


def test_unreachable_libvirt_is_retried_until_the_daemon_appears(
    tmp_path, make_domain, start_service, subscribe
):
    socket_path = str(tmp_path / "libvirt-sock")
    proxy = UnixSocketProxy(socket_path, LIBVIRTD_SOCKET)
    dom = make_domain()
    _, collector = subscribe()
    service = start_service(uri=f"test+unix:///default?socket={socket_path}")

    failures = service.wait_for_log("cannot connect to libvirt", count=3)
    delays = [float(line.rsplit("retrying in ", 1)[1].split()[0]) for line in failures]
    assert delays[0] < delays[2], f"no backoff: {delays}"
    assert service.process.poll() is None, "the service must stay up"

    proxy.start()
    try:
        service.wait_for_log("connected to libvirt")
        dom.create()
        event = collector.wait_for(lambda e: e.instance_uuid == dom.UUIDString() and not e.resync)
        assert event.transition is Transition.STARTED
    finally:
        proxy.stop()


@pytest.fixture
def broker_user():
    """A RabbitMQ user name that does not exist yet; deleted after the test."""
    name = unique("hn-user")
    yield name
    subprocess.run(["rabbitmqctl", "-q", "delete_user", name], check=False, capture_output=True)


def test_refused_broker_login_is_retried_and_events_are_kept(
    broker_user, make_domain, start_service, subscribe
):
    password = f"pw-{uuid.uuid4().hex}"
    dom = make_domain()
    _, collector = subscribe()
    service = start_service(transport_url=f"rabbit://{broker_user}:{password}@127.0.0.1:5672/")
    refusals = service.wait_for_log("ACCESS_REFUSED", count=2)
    assert all(f"{broker_user}@127.0.0.1:5672" in line for line in refusals)
    # Events happen while the broker refuses us: they must wait, not vanish.
    service.wait_for_log("connected to libvirt")
    dom.create()
    dom.suspend()

    for command in (
        ["add_user", broker_user, password],
        ["set_permissions", broker_user, ".*", ".*", ".*"],
    ):
        subprocess.run(["rabbitmqctl", "-q", *command], check=True, capture_output=True)
    collector.wait_for(
        lambda e: e.instance_uuid == dom.UUIDString() and e.transition is Transition.PAUSED
    )
    assert [e.transition for e in collector.of(dom.UUIDString(), resync=False)] == [
        Transition.STARTED,
        Transition.PAUSED,
    ]
    assert service.stop() == 0
    assert password not in service.log


def test_malformed_messages_are_rejected_counted_and_consumption_goes_on(broker, names, subscribe):
    subscriber, collector = subscribe()
    key = wire.routing_key(TOPIC, names["host"])
    good = make_event(host=names["host"])
    encoded = wire.encode(good)
    seq_as_text = encoded.replace(b'\\"seq\\":', b'\\"seq\\":\\"x')
    assert seq_as_text != encoded  # the edit found the field
    bad_bodies = [
        b"\xff\xfe not json",
        b"[1, 2, 3]",
        json.dumps({"oslo.version": "2.0", "oslo.message": "{not json"}).encode(),
        json.dumps({"event_type": "compute.instance.update", "payload": {}}).encode(),
        seq_as_text,
    ]
    for body in [*bad_bodies, encoded]:
        broker.basic_publish(amqp.Message(body, delivery_mode=2), names["exchange"], key)

    assert collector.wait_for(lambda e: e.event_id == good.event_id) == good
    assert subscriber.stats.malformed == len(bad_bodies)
    assert subscriber.stats.delivered == 1
    # Rejected without requeue: nothing is left to loop on.
    _, ready, _ = broker.queue_declare(wire.host_queue_name(TOPIC, names["host"]), passive=True)
    assert ready == 0


def test_a_lost_libvirt_connection_is_reopened_and_resynced(
    tmp_path, make_domain, start_service, subscribe
):
    socket_path = str(tmp_path / "libvirt-sock")
    proxy = UnixSocketProxy(socket_path, LIBVIRTD_SOCKET)
    proxy.start()
    dom = make_domain()
    _, collector = subscribe()
    service = start_service(uri=f"test+unix:///default?socket={socket_path}")
    try:
        collector.wait_for(lambda e: e.instance_uuid == dom.UUIDString())  # first snapshot
        proxy.stop()  # the daemon "goes away": every connection cut, socket gone
        service.wait_for_log("lost libvirt")
        dom.create()  # happens while the service cannot see it
        proxy.start()
        service.wait_for_log("connected to libvirt", count=2)
        missed = collector.wait_for(lambda e: e.instance_uuid == dom.UUIDString() and e.resync
                                    and e.transition is Transition.STARTED)  # fmt: skip
        assert missed.reason == "RESYNC"
        dom.suspend()
        pushed = collector.wait_for(lambda e: e.instance_uuid == dom.UUIDString() and not e.resync)
        assert pushed.transition is Transition.PAUSED
        assert service.process.poll() is None
    finally:
        proxy.stop()


def test_typos_in_the_config_file_stop_the_service_one_line_each(start_service, tmp_path):
    service = start_service(
        publisher={"transprot_url": "rabbit://nova:s3cret@127.0.0.1:5672/"},
        publsher={"exchange": "hv"},
    )

    assert service.process.wait(TIMEOUT) == 2
    service.stop()
    path = tmp_path / "notifier-0.conf"
    assert service.lines == [
        f"hypervisor-notifier: error: {path}: [publisher] transprot_url: unknown option "
        "(did you mean transport_url?)\n",
        f"hypervisor-notifier: error: {path}: [publsher]: unknown section "
        "(did you mean publisher?)\n",
    ]


@pytest.mark.parametrize(
    ("password", "pieces"),
    [
        ("ab/cd", ["ab", "cd"]),  # was: host "nova", port "ab", vhost "cd@127.0.0.1:5672/"
        ("1234/x", ["1234"]),  # was: silently host nova, port 1234
        ("ab,cd", ["ab", "cd"]),  # was: two brokers
        ("ab#cd", ["ab", "cd"]),
        ("pässw/örd", ["pässw", "örd"]),
    ],
)
def test_an_unencoded_password_stops_the_service_and_is_never_shown(
    start_service, tmp_path, password, pieces
):
    service = start_service(transport_url=f"rabbit://nova:{password}@127.0.0.1:5672/")

    assert service.process.wait(TIMEOUT) == 2
    service.stop()
    assert len(service.lines) == 1, service.log
    line = service.lines[0]
    assert line.startswith(
        f"hypervisor-notifier: error: {tmp_path}/notifier-0.conf: [publisher] transport_url: "
    )
    assert "must be percent-encoded" in line
    for piece in [password, *pieces]:
        assert piece not in line.replace("percent-encoded", "")
