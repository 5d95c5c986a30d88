"""Host events against real hypervisors: unknown is not stopped.

A private libvirtd killed, or frozen, and the vSphere simulator restarted,
under the running service: a Subscriber with ``on_host`` gets
``hypervisor.host.disconnected`` at once (one per outage, however many
attempts fail while it is down), then the resync's events and
``hypervisor.host.connected``; no guest is reported stopped meanwhile.
"""

from __future__ import annotations

import signal
import time

import pytest

from hypervisor_notifier.events import PowerState, Transition
from hypervisor_notifier.host_events import HostChange

from .conftest import Collector
from .faults import metrics
from .privatelibvirtd import PrivateLibvirtd
from .test_libvirtd_faults import HUNG_DAEMON_DETECTION, define_running

# The test driver's own guest ("test", running): a restarted daemon has it again.
TEST_DRIVER_GUEST = "test"


def changes(host: Collector) -> list[tuple[str, str]]:
    return [(event.change.value, event.reason) for event in host.events]


def subscribe_all(subscribe) -> tuple[Collector, Collector]:
    """A Subscriber of this test's host: (its lifecycle events, its host events)."""
    host = Collector()
    _, guests = subscribe(on_host=host)
    return guests, host


def wait_for_change(host: Collector, change: HostChange, count: int = 1):
    """The ``count``-th host event of ``change``."""
    host.wait_for(lambda _event: sum(e.change is change for e in host.events) >= count)
    return [e for e in host.events if e.change is change][count - 1]


@pytest.fixture
def daemon(private_libvirtd):
    return private_libvirtd


def test_a_killed_libvirtd_is_disconnected_at_once_and_its_guests_never_reported_stopped(
    daemon, start_service, subscribe
):
    conn, nova_guest = define_running(daemon)
    lost_uuid = nova_guest.UUIDString()
    kept_uuid = conn.lookupByName(TEST_DRIVER_GUEST).UUIDString()
    guests, host = subscribe_all(subscribe)
    service = start_service(uri=daemon.uri, libvirt={"report_foreign": "true"})
    started = wait_for_change(host, HostChange.CONNECTED)
    assert (started.reason, started.details["listed"]) == ("started", 2)
    assert {e.instance_uuid for e in guests.events} == {lost_uuid, kept_uuid}
    conn.close()

    killed_at = time.monotonic()
    daemon.kill()  # the test driver's state goes with it: the nova guest is gone
    disconnected = wait_for_change(host, HostChange.DISCONNECTED)
    noticed = time.monotonic() - killed_at
    # It stays down through several attempts: still one disconnected.
    service.wait_for_log("cannot connect to libvirt", count=3)
    port = service.health_port
    status, health = service.healthz()
    sample = metrics(port)
    daemon.start()
    reconnected = wait_for_change(host, HostChange.CONNECTED, count=2)

    assert changes(host) == [
        ("connected", "started"),
        ("disconnected", "end of file"),
        ("connected", "reconnected"),
    ]
    assert status == 503 and any("libvirt" in problem for problem in health["problems"])
    assert sample['hypervisor_notifier_host_events_total{change="disconnected"}'] == 1
    assert sample["hypervisor_notifier_hypervisor_disconnected_seconds"] > 0
    assert sample["hypervisor_notifier_hypervisor_connected"] == 0
    # The resync's events come before connected, which says what it found.
    details = dict(reconnected.details)
    assert details.pop("down_seconds") > 0
    assert details == {"listed": 1, "changed": 0, "vanished": 1}
    after = [e for e in guests.events if e.seq > disconnected.seq]
    (vanished,) = after
    assert vanished.instance_uuid == lost_uuid and vanished.seq < reconnected.seq
    assert (vanished.transition, vanished.power_state, vanished.resync) == (
        Transition.VANISHED, PowerState.NOSTATE, True,
    )  # fmt: skip
    # No guest was ever reported stopped: not the one that vanished, not the one kept.
    assert all(e.transition is not Transition.STOPPED for e in guests.events)
    assert [e.transition for e in guests.of(kept_uuid)] == [Transition.STARTED]
    print(
        f"\nlibvirtd SIGKILL: hypervisor.host.disconnected received {noticed:.2f} s after the "
        f"kill; connected after {reconnected.details['down_seconds']:.2f} s down "
        f"(loaded machine)"
    )


def test_a_libvirtd_unreachable_at_start_is_one_disconnected_then_connected_started(
    tmp_path, start_service, subscribe
):
    directory = tmp_path / "late-libvirtd"
    directory.mkdir()
    late = PrivateLibvirtd(directory)  # not started yet: its socket is missing
    guests, host = subscribe_all(subscribe)
    service = start_service(uri=late.uri, libvirt={"report_foreign": "true"})
    try:
        disconnected = wait_for_change(host, HostChange.DISCONNECTED)
        service.wait_for_log("cannot connect to libvirt", count=3)  # retried, with backoff
        late.start()
        started = wait_for_change(host, HostChange.CONNECTED)
        seen = [e.change for e in host.events]  # before the daemon goes again
    finally:
        late.stop()

    assert seen == [HostChange.DISCONNECTED, HostChange.CONNECTED]
    assert disconnected.reason.startswith("cannot connect to libvirt")
    assert started.reason == "started" and started.details["down_seconds"] > 0
    # The test driver's own guest, found by the start-up resync before connected.
    (snapshot,) = guests.events
    assert snapshot.resync and snapshot.seq < started.seq


def test_a_frozen_libvirtd_is_disconnected_by_keepalive_and_connected_after_it_thaws(
    daemon, start_service, subscribe
):
    conn, guest = define_running(daemon)
    uuid = guest.UUIDString()
    guests, host = subscribe_all(subscribe)
    service = start_service(uri=daemon.uri, libvirt=HUNG_DAEMON_DETECTION)
    wait_for_change(host, HostChange.CONNECTED)

    frozen_at = time.monotonic()
    daemon.freeze()
    try:
        disconnected = wait_for_change(host, HostChange.DISCONNECTED)
        noticed = time.monotonic() - frozen_at
        # Opens stuck on the frozen daemon are abandoned and retried: no more disconnected.
        service.wait_for_log("did not answer within 2 s", count=2)
    finally:
        daemon.thaw()
    reconnected = wait_for_change(host, HostChange.CONNECTED, count=2)

    assert changes(host) == [
        ("connected", "started"),
        ("disconnected", "keepalive timeout"),
        ("connected", "reconnected"),
    ]
    assert {k: v for k, v in reconnected.details.items() if k != "down_seconds"} == {
        "listed": 1, "changed": 0, "vanished": 0,
    }  # fmt: skip
    # The guest ran through it all: its start-up state only, nothing while unknown.
    assert [e.transition for e in guests.of(uuid)] == [Transition.STARTED]
    assert disconnected.seq < reconnected.seq
    conn.close()
    print(f"\nlibvirtd SIGSTOP: disconnected {noticed:.2f} s after the freeze (keepalive 1 s x 2)")


def test_a_restarted_vsphere_is_disconnected_then_connected_and_no_vm_reported_stopped(
    vcsim, start_service, subscribe
):
    guests, host = subscribe_all(subscribe)
    start_service(DEFAULT={"backend": "esx"}, esx=vcsim.config())
    started = wait_for_change(host, HostChange.CONNECTED)
    vms = started.details["listed"]
    assert vms == vcsim.vms and len({e.instance_uuid for e in guests.events}) == vms

    restarted_at = time.monotonic()
    vcsim.restart()  # every VM powered on again, as they were
    disconnected = wait_for_change(host, HostChange.DISCONNECTED)
    noticed = time.monotonic() - restarted_at
    reconnected = wait_for_change(host, HostChange.CONNECTED, count=2)

    assert [e.change for e in host.events] == [
        HostChange.CONNECTED, HostChange.DISCONNECTED, HostChange.CONNECTED,
    ]  # fmt: skip
    assert disconnected.hypervisor == "esx" and disconnected.reason
    assert reconnected.reason == "reconnected"
    assert {k: v for k, v in reconnected.details.items() if k != "down_seconds"} == {
        "listed": vms, "changed": 0, "vanished": 0,
    }  # fmt: skip
    assert [e for e in guests.events if e.seq > disconnected.seq] == []
    assert all(e.transition is not Transition.STOPPED for e in guests.events)
    print(
        f"\nvcsim restart: disconnected ({disconnected.reason!r}) {noticed:.2f} s after the "
        f"restart began; connected after {reconnected.details['down_seconds']:.2f} s down"
    )


def test_a_frozen_vsphere_is_disconnected_by_its_timeout_and_connected_after_it_resumes(
    vcsim, start_service, subscribe
):
    guests, host = subscribe_all(subscribe)
    start_service(DEFAULT={"backend": "esx"}, esx=vcsim.config(connect_timeout="1"))
    wait_for_change(host, HostChange.CONNECTED)

    vcsim.process.send_signal(signal.SIGSTOP)  # answers nothing, keeps its socket
    try:
        disconnected = wait_for_change(host, HostChange.DISCONNECTED)
    finally:
        vcsim.process.send_signal(signal.SIGCONT)
    reconnected = wait_for_change(host, HostChange.CONNECTED, count=2)

    assert [e.change for e in host.events] == [
        HostChange.CONNECTED, HostChange.DISCONNECTED, HostChange.CONNECTED,
    ]  # fmt: skip
    assert "timed out" in disconnected.reason.lower(), disconnected.reason
    assert reconnected.details["changed"] == 0
    assert all(e.seq < disconnected.seq for e in guests.events)  # nothing while unknown
