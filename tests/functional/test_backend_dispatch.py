"""Both backends on their shared skeleton, against the real libvirtd and the vSphere simulator.

- Events that waited while the listener was busy come in one batch, and the
  service commits that batch to the outbox file in one go (group commit).
- A listener that raises is logged and skipped: the backend keeps its
  connection (libvirt) or session (ESX) and reports the next events.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from oslo_config import cfg

from hypervisor_notifier import conf as config
from hypervisor_notifier import wire
from hypervisor_notifier.backends.libvirt.backend import LibvirtBackend
from hypervisor_notifier.events import LifecycleEvent, Observation, Transition
from hypervisor_notifier.notifier.outbox_sqlite import SQLiteOutbox
from hypervisor_notifier.notifier.service import Service

from .conftest import LIBVIRT_URI, TIMEOUT, unique
from .faults import Burst, running_domains, wait_until

if TYPE_CHECKING:
    from hypervisor_notifier.backends.base import DispatchingBackend

CALLS = 40


def service_conf(**groups: dict[str, str]) -> cfg.ConfigOpts:
    conf = cfg.ConfigOpts()
    config.register_opts(conf)
    conf([], default_config_files=[], default_config_dirs=[])
    conf.set_override("connection_uri", LIBVIRT_URI, group="libvirt")
    for group, values in groups.items():
        for name, value in values.items():
            conf.set_override(name, value, group=group)
    return conf


class CountingBackend(LibvirtBackend):
    """The libvirt backend, counting what its callback received of ``uuids``."""

    uuids: frozenset[str] = frozenset()
    received = 0

    def _on_lifecycle(self, conn, dom, event, detail, opaque) -> None:
        super()._on_lifecycle(conn, dom, event, detail, opaque)
        if dom.UUIDString() in self.uuids:
            self.received += 1


class Listener:
    """Records what the backend reports of ``uuids``; may hold its first resync or fail once.

    Arguments:
        uuids: The guests of this test (the daemon's test driver is shared).
        then: A listener to pass every call on to (the service), or None.
        fail_first: Raise in the first ``on_events`` call, as a buggy listener would.

    """

    def __init__(self, uuids: set[str], then=None, *, fail_first: bool = False) -> None:
        self.uuids = uuids
        self.then = then
        self.fail_first = fail_first
        self.batches: list[list[Observation]] = []
        self.calls = 0
        self.resyncs: list[str] = []
        self.hold = threading.Event()
        self.hold.set()
        self.changed = threading.Condition()

    def on_events(self, observations: list[Observation]) -> None:
        if self.then is not None:
            self.then.on_events(observations)
        with self.changed:
            self.calls += 1
            ours = [o for o in observations if o.instance_uuid in self.uuids]
            if ours:
                self.batches.append(ours)
            self.changed.notify_all()
        if self.fail_first and self.calls == 1:
            raise RuntimeError("listener bug")

    def on_event(self, observation: Observation) -> None:
        """The one-event call of earlier versions: lets this test show how they behaved."""
        self.on_events([observation])

    def on_resync(self, reason: str) -> None:
        if self.then is not None:
            self.then.on_resync(reason)
        with self.changed:
            self.resyncs.append(reason)
            self.changed.notify_all()
        assert self.hold.wait(TIMEOUT)

    def on_disconnected(self, reason: str) -> None:
        """Seen as a second resync."""

    def wait_until(self, condition: Callable[[], bool], what: str) -> None:
        with self.changed:
            assert self.changed.wait_for(condition, TIMEOUT), f"{what}: {self.batches}"

    def reported(self) -> list[Transition]:
        return [o.transition for batch in self.batches for o in batch]


@pytest.fixture
def connected() -> Iterator[Callable[[DispatchingBackend, Listener], None]]:
    """``connect(backend, listener)``; every backend closed after."""
    backends: list[DispatchingBackend] = []

    def connect(backend: DispatchingBackend, listener: Listener) -> None:
        backends.append(backend)
        backend.connect(listener)
        listener.wait_until(lambda: bool(listener.resyncs), "the start-up resync")

    yield connect
    for backend in backends:
        backend.close()


def test_events_that_waited_come_in_one_batch_committed_at_once(
    make_domain, connected, tmp_path: Path
):
    domains = running_domains(make_domain, 5)
    uuids = {dom.UUIDString() for dom in domains}
    backend = CountingBackend(service_conf())
    backend.uuids = frozenset(uuids)
    outbox = SQLiteOutbox(str(tmp_path / "outbox.sqlite"))
    service = Service(backend, outbox, publisher=None, host=unique("fn"))  # type: ignore[arg-type]
    listener = Listener(uuids, service)
    listener.hold.clear()  # busy in its start-up resync: the burst's events wait
    try:
        connected(backend, listener)
        burst = Burst(domains, calls=CALLS)
        burst.start()
        burst.finish()
        wait_until(lambda: backend.received >= CALLS, what="the callbacks received the burst")
        listener.hold.set()
        listener.wait_until(lambda: len(listener.reported()) >= CALLS, "the burst reported")

        # Every event that waited came in one call, in the order of the calls.
        assert [len(batch) for batch in listener.batches] == [CALLS]
        by_guest = {uuid: [o.transition for o in listener.batches[0] if o.instance_uuid == uuid]
                    for uuid in uuids}  # fmt: skip
        assert by_guest == burst.expected
        # ... and the service had committed them all when that call returned.
        events = [wire.decode(body) for body in outbox_bodies(tmp_path / "outbox.sqlite")]
        pushed = [
            (e.instance_uuid, e.transition)
            for e in events
            if isinstance(e, LifecycleEvent) and not e.resync and e.instance_uuid in uuids
        ]
        assert pushed == [(o.instance_uuid, o.transition) for o in listener.batches[0]]
    finally:
        outbox.close()


def outbox_bodies(path: Path) -> list[bytes]:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return [body for (body,) in db.execute("SELECT body FROM events ORDER BY id")]
    finally:
        db.close()


def connections(caplog: pytest.LogCaptureFixture, message: str) -> int:
    """How many connections the backend logged (the test set the level to INFO first)."""
    return sum(1 for record in caplog.records if record.getMessage().startswith(message))


def test_libvirt_a_failing_listener_is_skipped_on_the_same_connection(
    make_domain, connected, caplog
):
    caplog.set_level(logging.INFO)
    (dom,) = running_domains(make_domain, 1)
    backend = LibvirtBackend(service_conf())
    listener = Listener({dom.UUIDString()}, fail_first=True)
    connected(backend, listener)

    dom.suspend()
    listener.wait_until(lambda: listener.calls >= 1, "a first call")  # it raised
    dom.resume()
    listener.wait_until(lambda: Transition.RESUMED in listener.reported(), "the resume")

    assert connections(caplog, "connected to libvirt") == 1
    assert (backend.reconnects, backend.problem, listener.resyncs) == (0, None, ["connected"])


def test_esx_a_failing_listener_is_skipped_in_the_same_session(vcsim, connected, caplog):
    from hypervisor_notifier.backends.esx import EsxBackend

    caplog.set_level(logging.INFO)
    session = vcsim.session()
    vm = vcsim.vms_by_name(session)["ha-host_VM0"]
    backend = EsxBackend(service_conf(esx=vcsim.config()))
    listener = Listener({vm.config.instanceUuid}, fail_first=True)
    connected(backend, listener)

    vm.PowerOffVM_Task()
    listener.wait_until(lambda: listener.calls >= 1, "a first call")  # it raised
    vm.PowerOnVM_Task()
    listener.wait_until(lambda: Transition.STARTED in listener.reported(), "the power-on")

    assert connections(caplog, "logged in to vSphere") == 1
    assert (backend.reconnects, backend.problem, listener.resyncs) == (0, None, ["connected"])
