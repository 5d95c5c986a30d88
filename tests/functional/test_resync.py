"""Resyncs publish exactly the changes the events missed: real service, daemon and broker."""

from __future__ import annotations

from hypervisor_notifier.events import PowerState, Transition

from .conftest import LIBGUESTFS_CHANNEL
from .sockproxy import UnixSocketProxy
from .test_bad_input import LIBVIRTD_SOCKET


def of(dom):
    return lambda event: event.instance_uuid == dom.UUIDString()


def test_a_restarted_service_publishes_only_what_changed_while_it_was_stopped(
    make_domain, start_service, subscribe
):
    dom, unchanged = make_domain(), make_domain()
    dom.create()
    unchanged.create()
    _, collector = subscribe()
    first = start_service()
    collector.wait_for(of(dom))
    collector.wait_for(of(unchanged))
    assert first.stop() == 0

    dom.suspend()
    second = start_service()
    paused = collector.wait_for(lambda e: of(dom)(e) and e.transition is Transition.PAUSED)
    second.wait_for_log("resync (connected)")

    assert (paused.resync, paused.power_state, paused.detail) == (
        True,
        PowerState.PAUSED,
        "PAUSED",
    )
    assert [e.transition for e in collector.of(dom.UUIDString())] == [
        Transition.STARTED,  # the first service's snapshot
        Transition.PAUSED,  # the one change, from the second service
    ]
    # The outbox kept what the first service published: nothing else is repeated.
    # (Counted on this test's guests: the resync's log line counts every guest of
    # the shared test driver, other tests' included.)
    assert len(collector.of(unchanged.UUIDString())) == 1


def test_a_guest_destroyed_while_libvirt_was_away_gets_one_resync_event_and_no_other(
    tmp_path, make_domain, start_service, subscribe
):
    socket_path = str(tmp_path / "libvirt-sock")
    proxy = UnixSocketProxy(socket_path, LIBVIRTD_SOCKET)
    proxy.start()
    destroyed, unchanged = make_domain(), make_domain()
    destroyed.create()
    unchanged.create()
    _, collector = subscribe()
    service = start_service(uri=f"test+unix:///default?socket={socket_path}")
    try:
        collector.wait_for(of(destroyed))
        collector.wait_for(of(unchanged))
        proxy.stop()  # libvirtd "restarts": the connection is cut
        service.wait_for_log("lost libvirt")
        destroyed.destroy()
        proxy.start()
        stopped = collector.wait_for(lambda e: of(destroyed)(e) and e.power_state is
                                     PowerState.SHUTDOWN)  # fmt: skip
        service.wait_for_log("resync (connected)", count=2)
    finally:
        proxy.stop()

    assert (stopped.resync, stopped.transition) == (True, Transition.STOPPED)
    assert len(collector.of(destroyed.UUIDString())) == 2
    assert len(collector.of(unchanged.UUIDString())) == 1  # its first snapshot only


def test_a_periodic_resync_with_nothing_changed_publishes_nothing(
    make_domain, start_service, subscribe
):
    dom = make_domain()
    _, collector = subscribe()
    service = start_service(sync={"interval": "1"})
    collector.wait_for(of(dom))
    service.wait_for_log("resync (periodic)", count=2)
    dom.create()  # a pushed event after the periodic resyncs: the stream still flows
    collector.wait_for(lambda e: of(dom)(e) and not e.resync)

    # Two periodic resyncs published nothing more of this test's guest.
    assert [(e.transition, e.resync) for e in collector.of(dom.UUIDString())] == [
        (Transition.STOPPED, True),
        (Transition.STARTED, False),
    ]


def test_guests_nova_did_not_launch_are_reported_only_when_configured(
    make_domain, start_service, subscribe
):
    nova, appliance = make_domain(), make_domain(LIBGUESTFS_CHANNEL)
    _, collector = subscribe()
    service = start_service()
    collector.wait_for(of(nova))
    appliance.create()
    nova.create()  # after the appliance's: once it is in, the appliance's would be too
    collector.wait_for(lambda e: of(nova)(e) and not e.resync)
    assert collector.of(appliance.UUIDString()) == []
    assert service.stop() == 0

    start_service(libvirt={"report_foreign": "true"})
    collector.wait_for(of(appliance))
    appliance.suspend()
    paused = collector.wait_for(lambda e: of(appliance)(e) and not e.resync)
    assert paused.transition is Transition.PAUSED
