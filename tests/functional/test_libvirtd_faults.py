"""libvirtd restarted or frozen under the running service: it reconnects and resyncs."""

from __future__ import annotations

import libvirt
import pytest

from hypervisor_notifier.events import PowerState, Transition

from .conftest import domain_xml, unique
from .privatelibvirtd import PrivateLibvirtd

# Fast detection of a hung daemon: 2 unanswered keepalives 1 s apart; opens
# abandoned after 2 s.
HUNG_DAEMON_DETECTION = {
    "keepalive_interval": "1",
    "keepalive_count": "2",
    "connect_timeout": "2",
}


@pytest.fixture
def daemon(tmp_path):
    directory = tmp_path / "libvirtd"
    directory.mkdir()
    daemon = PrivateLibvirtd(directory)
    daemon.start()
    yield daemon
    daemon.stop()


def define_running(daemon):
    conn = libvirt.open(daemon.uri)
    dom = conn.defineXML(domain_xml(unique("hn-dom")))
    dom.create()
    return conn, dom


def test_a_restarted_libvirtd_is_reconnected_and_what_changed_is_resynced(
    daemon, start_service, subscribe
):
    conn, dom = define_running(daemon)
    uuid = dom.UUIDString()
    _, collector = subscribe()
    service = start_service(uri=daemon.uri)
    collector.wait_for(lambda e: e.instance_uuid == uuid)
    conn.close()

    # A restart resets the test driver: the guest is gone, as after a host crash.
    daemon.restart()
    service.wait_for_log("lost libvirt")
    # Vanished from the listing: not a stop the hypervisor reported (test_host_events.py).
    missing = collector.wait_for(lambda e: e.instance_uuid == uuid and e.transition is
                                 Transition.VANISHED)  # fmt: skip
    assert (missing.resync, missing.detail, missing.power_state) == (
        True, "MISSING", PowerState.NOSTATE,
    )  # fmt: skip
    service.wait_for_log("connected to libvirt", count=2)

    conn, dom = define_running(daemon)  # events flow on the new connection
    collector.wait_for(lambda e: e.instance_uuid == dom.UUIDString() and not e.resync)
    conn.close()
    assert service.process.poll() is None


def test_a_frozen_libvirtd_is_detected_and_reconnected_after_it_resumes(
    daemon, start_service, subscribe
):
    conn, dom = define_running(daemon)
    uuid = dom.UUIDString()
    _, collector = subscribe()
    service = start_service(uri=daemon.uri, libvirt=HUNG_DAEMON_DETECTION)
    collector.wait_for(lambda e: e.instance_uuid == uuid)

    daemon.freeze()
    try:
        service.wait_for_log("keepalive timeout")
        # Stuck opens are abandoned, not waited on forever: the service answers.
        service.wait_for_log("did not answer within 2 s")
        status, health = service.healthz()
        assert status == 503
        assert any("libvirt" in problem for problem in health["problems"]), health
    finally:
        daemon.thaw()
    dom.suspend()  # right after the thaw: pushed or found by the resync, once
    paused = collector.wait_for(lambda e: e.instance_uuid == uuid and e.transition is
                                Transition.PAUSED)  # fmt: skip
    service.wait_for_log("connected to libvirt", count=2)
    assert [e.transition for e in collector.of(uuid)] == [Transition.STARTED, Transition.PAUSED]
    assert paused.power_state is PowerState.PAUSED
    assert service.healthz() == (200, {"status": "ok", "problems": []})
    conn.close()
