"""The service's security: it signs, never logs its key, sends no XML, opens libvirt read-only."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.parse
import uuid
from pathlib import Path

import pytest

from hypervisor_notifier import wire
from hypervisor_notifier.events import Transition
from hypervisor_notifier.signing import Verifier

from .conftest import TIMEOUT, TOPIC, domain_xml, unique

KEY = f"service-key-{uuid.uuid4().hex}"
#: Payload fields of the wire contract (doc/source/wire.rst), plus the signature.
PAYLOAD_FIELDS = {
    "schema_version", "event_id", "host", "hypervisor", "instance_uuid", "instance_name",
    "transition", "power_state", "reason", "detail", "details", "occurred_at", "seq", "resync",
    "signature",
}  # fmt: skip
#: Those of a host event (``hypervisor.host.connected`` at start).
HOST_PAYLOAD_FIELDS = {
    "schema_version", "event_id", "host", "hypervisor", "change", "reason", "details",
    "occurred_at", "seq", "signature",
}  # fmt: skip


def test_the_service_signs_with_its_key_file_and_never_logs_the_key(
    tmp_path, make_domain, start_service, subscribe
):
    key_file = tmp_path / "signing.key"
    key_file.write_text(KEY + "\n")
    key_file.chmod(0o600)
    verifier = Verifier({"2026-11": KEY.encode()})
    subscriber, collector = subscribe(verifier=verifier)
    dom = make_domain()
    service = start_service(
        DEFAULT={"debug": "true"}, signing={"key_file": str(key_file), "key_id": "2026-11"}
    )
    service.wait_for_log("signing events with key '2026-11'")
    dom.create()

    started = collector.wait_for(
        lambda e: e.instance_uuid == dom.UUIDString() and e.transition is Transition.STARTED
    )
    assert started.verified
    assert subscriber.stats.unverified == 0
    assert KEY not in service.log


def test_without_a_key_the_service_says_its_events_are_unsigned(start_service):
    service = start_service()
    assert service.wait_for_log("events are not signed: [signing] key is not set")


def test_payloads_carry_no_domain_xml_metadata_or_credentials(
    broker, names, hypervisor, start_service, subscribe
):
    secret = f"secret-{uuid.uuid4().hex}"
    password = f"pw-{uuid.uuid4().hex}"
    user = unique("hn-privacy")
    subprocess.run(["rabbitmqctl", "-q", "add_user", user, password], check=True,
                   capture_output=True)  # fmt: skip
    try:
        subprocess.run(["rabbitmqctl", "-q", "set_permissions", user, ".*", ".*", ".*"],
                       check=True, capture_output=True)  # fmt: skip
        metadata = (
            "<metadata><nova:instance xmlns:nova='http://openstack.org/xmlns/libvirt/nova/1.1'>"
            f"<nova:owner><nova:user uuid='u'>{secret}</nova:user></nova:owner>"
            "</nova:instance></metadata>"
            f"<description>{secret}</description>"
        )
        dom = hypervisor.defineXML(domain_xml(unique("hn-dom"), metadata))
        try:
            service = start_service(
                transport_url=f"rabbit://{user}:{password}@127.0.0.1:5672/",
                signing={"key": KEY},
            )
            service.wait_for_log("resync (connected)")
            _, collector = subscribe(exclusive=True)
            dom.create()
            collector.wait_for(lambda e: e.instance_uuid == dom.UUIDString())
            bodies = _bodies_in_host_queue(broker, names)
        finally:
            dom.destroy()
            dom.undefine()
    finally:
        subprocess.run(["rabbitmqctl", "-q", "delete_user", user], check=False,
                       capture_output=True)  # fmt: skip

    assert len(bodies) >= 2, "the resync's stopped and the pushed started"
    for body in bodies:
        text = body if isinstance(body, str) else body.decode()  # str: content_encoding set
        for forbidden in (secret, password, KEY, "<", "nova/1.1", "xmlns", "metadata"):
            assert forbidden not in text, forbidden
        payload = json.loads(json.loads(text)["oslo.message"])["payload"]
        assert set(payload) == (HOST_PAYLOAD_FIELDS if "change" in payload else PAYLOAD_FIELDS)
        assert set(payload["signature"]) == {"key_id", "alg", "value"}


def _bodies_in_host_queue(broker, names) -> list[bytes]:
    """Every raw body waiting in the host queue (taken off it)."""
    queue, bodies = wire.host_queue_name(TOPIC, names["host"]), []
    while (message := broker.basic_get(queue, no_ack=True)) is not None:
        bodies.append(message.body)
    return bodies


def _libvirt_client(pid: int) -> dict[str, str]:
    """virt-admin's client-info of the libvirtd client that is process ``pid``."""
    listing = subprocess.run(["virt-admin", "srv-clients-list", "libvirtd"], check=True,
                             capture_output=True, text=True).stdout  # fmt: skip
    for line in listing.splitlines()[2:]:
        if not line.strip():
            continue
        client_id = line.split()[0]
        info = subprocess.run(["virt-admin", "client-info", "libvirtd", client_id],
                              capture_output=True, text=True, check=False).stdout  # fmt: skip
        fields = dict(
            (key.strip(), value.strip())
            for key, _, value in (row.partition(":") for row in info.splitlines())
        )
        if fields.get("unix_process_id") == str(pid):
            return fields
    raise AssertionError(f"process {pid} is not a client of libvirtd:\n{listing}")


@pytest.mark.parametrize(("read_only", "expected"), [("true", "yes"), ("false", "no")])
def test_the_libvirt_connection_is_read_only_unless_configured_otherwise(
    start_service, read_only, expected
):
    service = start_service(libvirt={"read_only": read_only})
    service.wait_for_log("connected to libvirt")
    assert _libvirt_client(service.process.pid)["readonly"] == expected


@pytest.mark.parametrize(
    ("content", "mode", "message"),
    [
        ("", 0o600, "is empty"),
        ("\n", 0o400, "is empty"),
        (KEY, 0o644, "has mode 0644: group or others may access it"),
        (KEY, 0o640, "has mode 0640: group or others may access it"),
    ],
)
def test_an_empty_or_unprotected_key_file_stops_the_service(
    tmp_path, start_service, content, mode, message
):
    key_file = tmp_path / "signing.key"
    key_file.write_text(content)
    key_file.chmod(mode)

    service = start_service(signing={"key_file": str(key_file)})

    assert service.process.wait(TIMEOUT) == 2
    service.stop()
    assert len(service.lines) == 1, service.log
    assert service.lines[0].startswith("hypervisor-notifier: error: ")
    assert f"[signing] key_file '{key_file}' {message}" in service.lines[0]
    assert KEY not in service.log


def test_an_empty_key_file_stops_a_verifying_consumer(tmp_path):
    key_file = tmp_path / "signing.key"
    key_file.write_text("")
    key_file.chmod(0o600)

    watch = subprocess.run(
        [sys.executable, "-m", "hypervisor_notifier.cmd.events", "watch",
         "--transport-url", "rabbit://guest:guest@127.0.0.1:5672/", "--key-file", str(key_file)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )  # fmt: skip

    assert watch.returncode == 2
    assert watch.stderr.count("\n") == 1, watch.stderr
    assert f"[signing] key_file '{key_file}' is empty" in watch.stderr


def test_a_password_of_any_characters_is_in_no_log_line_argv_or_process_title(start_service):
    password = f"p/a,s#s@w:o%rd?é€-{uuid.uuid4().hex[:8]}"
    user = unique("hn-special")
    subprocess.run(["rabbitmqctl", "-q", "add_user", user, password], check=True,
                   capture_output=True)  # fmt: skip
    try:
        subprocess.run(["rabbitmqctl", "-q", "set_permissions", user, ".*", ".*", ".*"],
                       check=True, capture_output=True)  # fmt: skip
        encoded = urllib.parse.quote(password, safe="")
        service = start_service(
            DEFAULT={"debug": "true"},
            transport_url=f"rabbit://{user}:{encoded}@127.0.0.1:5672/",
        )
        service.wait_for_log(f"connected to broker {user}@127.0.0.1:5672")
        pid = service.process.pid
        shown = [
            service.log,
            Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace"),
            Path(f"/proc/{pid}/comm").read_text(),
            Path(f"/proc/{pid}/status").read_text().splitlines()[0],
        ]
        assert service.stop() == 0
    finally:
        subprocess.run(["rabbitmqctl", "-q", "delete_user", user], check=False,
                       capture_output=True)  # fmt: skip
    for text in shown:
        assert password not in text and encoded not in text
        assert "é€" not in text
