"""The esx backend against VMware's vSphere API simulator (govmomi, from Debian)."""

from __future__ import annotations

import contextlib
import socket

import pytest
from pyVim import connect

from hypervisor_notifier.events import PowerState, Transition

VM = "ha-host_VM{}"  # the simulator's VM names with -esx


@pytest.fixture
def session(vcsim):
    session = vcsim.session()
    yield session
    with contextlib.suppress(Exception):  # the simulator may have dropped it already
        connect.Disconnect(session)


def start_esx_service(start_service, vcsim, **esx):
    return start_service(DEFAULT={"backend": "esx"}, esx=vcsim.config(**esx))


def of(vm):
    uuid = vm.config.instanceUuid  # read now: the session may be gone when it is used
    return lambda event: event.instance_uuid == uuid


def watch_first_vm(vcsim, session, start_service, subscribe):
    """The service watching the simulator, its first VM's start-up snapshot received."""
    vm = vcsim.vms_by_name(session)[VM.format(0)]
    is_vm = of(vm)
    _, collector = subscribe()
    service = start_esx_service(start_service, vcsim)
    collector.wait_for(is_vm)
    return vm, is_vm, collector, service


def pushed(collector, vm):
    return [
        (e.transition, e.power_state, e.reason, e.detail)
        for e in collector.of(vm.config.instanceUuid, resync=False)
    ]


def test_power_operations_from_another_session_reach_the_subscriber_once_each(
    vcsim, session, start_service, subscribe
):
    vms = vcsim.vms_by_name(session)
    api, guest, sentinel = vms[VM.format(0)], vms[VM.format(1)], vms[VM.format(2)]
    _, collector = subscribe()
    start_esx_service(start_service, vcsim)
    for vm in vms.values():  # the start-up resync: every VM, powered on
        snapshot = collector.wait_for(of(vm))
        assert (snapshot.resync, snapshot.power_state) == (True, PowerState.RUNNING)
        assert snapshot.instance_name == vm.name
        assert snapshot.hypervisor == "esx"

    api.PowerOffVM_Task()
    api.PowerOnVM_Task()
    api.SuspendVM_Task()
    api.PowerOnVM_Task()
    guest.ShutdownGuest()
    sentinel.PowerOffVM_Task()  # one ordered stream: once it is in, all are
    collector.wait_for(lambda e: of(sentinel)(e) and not e.resync)

    assert pushed(collector, api) == [
        (Transition.STOPPED, PowerState.SHUTDOWN, "VmPoweredOffEvent", "poweredOff"),
        (Transition.STARTED, PowerState.RUNNING, "VmPoweredOnEvent", "poweredOn"),
        (Transition.SUSPENDED, PowerState.SUSPENDED, "VmSuspendedEvent", "suspended"),
        (Transition.STARTED, PowerState.RUNNING, "VmPoweredOnEvent", "poweredOn"),
    ]
    # A guest-initiated shutdown is told from an API power-off.
    assert pushed(collector, guest) == [
        (Transition.SHUTTING_DOWN, PowerState.RUNNING, "VmGuestShutdownEvent", "guest"),
        (Transition.STOPPED, PowerState.SHUTDOWN, "VmGuestShutdownEvent", "poweredOff"),
    ]


def test_a_restarted_simulator_is_logged_in_again_and_resynced(
    vcsim, session, start_service, subscribe
):
    vm, is_vm, collector, service = watch_first_vm(vcsim, session, start_service, subscribe)
    vm.PowerOffVM_Task()
    stopped = collector.wait_for(lambda e: is_vm(e) and e.transition is Transition.STOPPED)

    vcsim.restart()  # a restarted vCenter: every VM is powered on again
    service.wait_for_log("lost vSphere session")
    resynced = collector.wait_for(lambda e: is_vm(e) and e.seq > stopped.seq)
    resync = service.wait_for_log("resync (connected)", count=2)[1]

    assert (resynced.resync, resynced.transition) == (True, Transition.STARTED)
    assert resynced.power_state is PowerState.RUNNING
    assert "1 changes published" in resync  # the other VMs did not change
    assert service.process.poll() is None


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize(
    ("esx", "message"),
    [
        ({"password": "not-the-password"}, "refused the login"),
        ({"port": "FREE"}, "cannot reach vSphere"),
        ({"ca_file": ""}, "does not verify"),  # the system CAs do not know the simulator's
    ],
    ids=["wrong-password", "unreachable", "unverified-certificate"],
)
def test_bad_esx_settings_are_one_clear_line_each_retried_never_a_crash(
    vcsim, start_service, esx, message
):
    if esx.get("port") == "FREE":
        esx = {"port": str(free_port())}
    service = start_esx_service(start_service, vcsim, **esx)

    failures = service.wait_for_log(message, count=2)
    assert all("retrying in" in line for line in failures)
    assert service.process.poll() is None
    assert vcsim.password not in service.log
    assert service.stop() == 0


@pytest.mark.parametrize(
    ("scope", "reported"),
    [
        ({"cluster": "DC0_C0"}, {"DC0_C0_RP0_VM0", "DC0_C0_RP0_VM1"}),
        ({"esx_host": "DC0_H0"}, {"DC0_H0_VM0", "DC0_H0_VM1"}),
        ({}, {"DC0_C0_RP0_VM0", "DC0_C0_RP0_VM1", "DC0_H0_VM0", "DC0_H0_VM1"}),
    ],
    ids=["cluster", "host", "everything"],
)
def test_a_vcenter_reports_only_the_vms_of_the_configured_cluster_or_host(
    vcsim_binary, tmp_path, start_service, subscribe, scope, reported
):
    from .vcsim import Simulator

    vcenter = Simulator(vcsim_binary, tmp_path, vms=2, vcenter=True)
    vcenter.start()
    try:
        _, collector = subscribe()
        service = start_esx_service(start_service, vcenter, **scope)
        service.wait_for_log("resync (connected)")
        session = vcenter.session()
        vms = vcenter.vms_by_name(session)
        # A change on every VM, those out of scope first: were they reported,
        # their events would come before the last one awaited.
        for name in sorted(vms, key=lambda name: (name in reported, name)):
            vms[name].PowerOffVM_Task()
        last = vms[sorted(reported)[-1]]
        collector.wait_for(lambda e: of(last)(e) and not e.resync)
        connect.Disconnect(session)
    finally:
        vcenter.stop()

    assert {e.instance_name for e in collector.events if e.resync} == reported
    assert {e.instance_name for e in collector.events if not e.resync} == reported


def test_a_terminated_session_is_logged_in_again_and_resynced(
    vcsim, session, start_service, subscribe
):
    vm, is_vm, collector, service = watch_first_vm(vcsim, session, start_service, subscribe)

    # An administrator ends the service's session (vSphere then answers NotAuthenticated)
    # and powers the VM off before the service is back.
    manager = session.content.sessionManager
    ours = manager.currentSession.key
    manager.TerminateSession([s.key for s in manager.sessionList if s.key != ours])
    vm.PowerOffVM_Task()

    stopped = collector.wait_for(lambda e: is_vm(e) and e.transition is Transition.STOPPED)
    service.wait_for_log("logged in to vSphere", count=2)
    assert "NotAuthenticated" in service.wait_for_log("lost vSphere session")[0]
    assert stopped.power_state is PowerState.SHUTDOWN
