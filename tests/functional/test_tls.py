"""TLS to the broker: a private RabbitMQ node with a TLS listener and a CA made by the test."""

from __future__ import annotations

import datetime
import itertools
import subprocess
import sys
import uuid

import pytest

from hypervisor_notifier.consumer import Subscriber
from hypervisor_notifier.events import Transition
from hypervisor_notifier.tls import TLSSettings
from tests.factories import make_event

PASSWORD = f"pw-{uuid.uuid4().hex}"


@pytest.fixture
def tls_user(tls_broker):
    """A user of this test on the private node; its rabbits:// URL builder."""
    user = f"hn-tls-{uuid.uuid4().hex[:8]}"
    tls_broker.ctl("add_user", user, PASSWORD)
    tls_broker.ctl("set_permissions", user, ".*", ".*", ".*")

    def url(host: str = "localhost") -> str:
        return f"rabbits://{user}:{PASSWORD}@{host}:{tls_broker.port}/"

    yield url
    tls_broker.ctl("delete_user", user)


def client_options(tls_broker, ca: str = "ca.pem") -> dict[str, str]:
    """The [publisher] TLS options: the given CA and the test's client certificate."""
    return {
        "ssl_ca_file": tls_broker.path(ca),
        "ssl_cert_file": tls_broker.path("client.pem"),
        "ssl_key_file": tls_broker.path("client.key"),
    }


def test_the_service_publishes_over_tls_with_verification_and_a_subscriber_receives(
    tls_broker, tls_user, make_domain, start_service, subscribe
):
    dom = make_domain()
    _, collector = subscribe(transport_url=tls_user(), **client_options(tls_broker))
    service = start_service(
        transport_url=tls_user(), publisher=client_options(tls_broker) | {"heartbeat": "2"}
    )
    service.wait_for_log("connected to broker hn-tls-")  # resync published: the stopped state
    dom.create()

    started = collector.wait_for(
        lambda e: e.instance_uuid == dom.UUIDString() and e.transition is Transition.STARTED
    )
    assert not started.resync, "pushed by libvirt, published over TLS"
    assert PASSWORD not in service.log


@pytest.mark.parametrize(
    ("host", "ca", "reason"),
    [
        ("localhost", "other-ca.pem", "self-signed certificate in certificate chain"),
        # The certificate names localhost: the name is checked, not only the CA.
        ("127.0.0.1", "ca.pem", "IP address mismatch, certificate is not valid for '127.0.0.1'"),
    ],
)
def test_an_untrusted_broker_is_refused_in_one_clear_masked_line_and_retried_with_backoff(
    tls_broker, tls_user, start_service, host, ca, reason
):
    service = start_service(transport_url=tls_user(host), publisher=client_options(tls_broker, ca))
    lines = service.wait_for_log("certificate is not trusted", count=3)

    assert service.process.poll() is None, "the service must keep retrying"
    expected = (
        f"cannot publish to broker hn-tls-"  # user@host:port, never the password
        f"{tls_user().split('hn-tls-')[1].split(':')[0]}@{host}:{tls_broker.port}: "
        f"TLS: the broker's certificate is not trusted: {reason}"
    )
    assert all(expected in line for line in lines), lines
    assert PASSWORD not in service.log and "Traceback" not in service.log
    # Backoff (0.5 s, then 1 s, each less up to 25% jitter), not a tight loop.
    times = [datetime.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S.%f") for line in lines[:3]]
    first, second = ((b - a).total_seconds() for a, b in itertools.pairwise(times))
    assert 0.3 < first < second, (first, second)


def test_the_subscriber_refuses_an_untrusted_broker_and_retries(
    tls_broker, tls_user, names, caplog
):
    subscriber = Subscriber(tls_user(), print, host=names["host"], exchange=names["exchange"],
                            **client_options(tls_broker, "other-ca.pem"))  # fmt: skip
    subscriber.retry_backoff_initial = 0.01
    subscriber.start()
    try:
        assert not subscriber.wait_ready(2.0)
    finally:
        subscriber.stop()
    refusals = [r.getMessage() for r in caplog.records if "not trusted" in r.getMessage()]
    assert refusals and all("self-signed certificate" in line for line in refusals)
    assert not any(PASSWORD in r.getMessage() for r in caplog.records)


def test_a_burst_over_tls_is_confirmed_whole(tls_broker, tls_user, start_publisher, names):
    # heartbeat 0: a pump that missed bytes OpenSSL had already decrypted would
    # wait in select for each miss (test_publisher_tls.py forces one). The speed
    # of a TLS burst is the throughput benchmark's, not a test's.
    options = client_options(tls_broker)
    tls = TLSSettings(options["ssl_ca_file"], options["ssl_cert_file"], options["ssl_key_file"])
    publisher = start_publisher(transport_url=tls_user(), heartbeat=0, tls=tls, confirm_window=64)
    # The publisher's own host: another host's events would have no queue (returned).
    events = [make_event(seq=seq, host=names["host"]) for seq in range(2000)]

    publisher.send(*events)

    assert publisher.publisher.confirmed == 2000


def test_the_preflight_checks_a_tls_broker_and_names_an_untrusted_one(
    tls_broker, tls_user, tmp_path, names
):
    def status(ca: str) -> str:
        config = tmp_path / f"{ca}.conf"
        options = "".join(f"{k} = {v}\n" for k, v in client_options(tls_broker, ca).items())
        config.write_text(
            f"[DEFAULT]\nhost = {names['host']}\n[outbox]\npath = {tmp_path / 'o.sqlite'}\n"
            f"[publisher]\ntransport_url = {tls_user()}\nexchange = {names['exchange']}\n"
            + options
        )
        return subprocess.run(
            [sys.executable, "-m", "hypervisor_notifier.cmd.status", "check", "--config-file",
             str(config), "--timeout", "5"], capture_output=True, text=True, timeout=60,
        ).stdout  # fmt: skip

    broker_row = f"broker localhost:{tls_broker.port}"
    trusted = next(line for line in status("ca.pem").splitlines() if broker_row in line)
    assert "logged in" in trusted, trusted
    untrusted = next(line for line in status("other-ca.pem").splitlines() if broker_row in line)
    assert "the broker's certificate is not trusted" in untrusted
    assert PASSWORD not in untrusted


def test_the_subscriber_checks_each_hosts_certificate_against_that_hosts_name(
    tls_broker, tls_user, names
):
    # The same node twice: as 127.0.0.1 (the certificate names only localhost:
    # refused), then as localhost, where kombu fails over to.
    first = tls_user("127.0.0.1")
    second = tls_user().split("://", 1)[1]
    url = f"{first.rstrip('/')},{second}"
    subscriber = Subscriber(url, print, host=names["host"],
                            exchange=names["exchange"], **client_options(tls_broker))  # fmt: skip
    subscriber.start()
    try:
        assert subscriber.wait_ready(30)
    finally:
        subscriber.stop()
