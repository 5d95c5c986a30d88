"""The libvirt backend's fault events against the real libvirtd.

libvirt's test driver emits no fault event (tests/e2e/test_qemu_faults.py
makes real qemu guests fail); here the real daemon accepts every fault
event ID the backend registers, on each connection, beside the lifecycle
events that still flow.
"""

from __future__ import annotations

import logging
import threading

import libvirt

from hypervisor_notifier.backends.libvirt.backend import LibvirtBackend

from .conftest import TIMEOUT
from .faults import running_domains
from .test_backend_dispatch import service_conf

#: The lifecycle and reboot callbacks, and the seven fault ones.
CALLBACKS = 2 + 7


class Listener:
    """Records the observations of one guest."""

    def __init__(self, uuid: str) -> None:
        self.uuid = uuid
        self.observations: list[object] = []
        self.resynced = threading.Event()
        self.changed = threading.Condition()

    def on_events(self, observations: list) -> None:
        with self.changed:
            self.observations += [o for o in observations if o.instance_uuid == self.uuid]
            self.changed.notify_all()

    def on_resync(self, reason: str) -> None:
        self.resynced.set()

    def on_disconnected(self, reason: str) -> None:
        """Not expected here."""


def test_the_real_daemon_takes_every_fault_event_and_lifecycle_events_still_flow(
    make_domain, caplog
):
    caplog.set_level(logging.INFO)
    (dom,) = running_domains(make_domain, 1)
    backend = LibvirtBackend(service_conf())
    listener = Listener(dom.UUIDString())
    backend.connect(listener)
    try:
        assert listener.resynced.wait(TIMEOUT)
        registered = len(backend._callback_ids)
        dom.suspend()
        with listener.changed:
            assert listener.changed.wait_for(lambda: listener.observations, TIMEOUT)
    finally:
        backend.close()

    assert registered == CALLBACKS
    assert "not reported" not in caplog.text
    (paused,) = listener.observations
    assert (paused.reason, paused.detail) == ("SUSPENDED", "PAUSED")
    assert dom.state()[0] == libvirt.VIR_DOMAIN_PAUSED
