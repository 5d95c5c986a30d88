"""libvirt's guest fault events: codes against the binding, callbacks to observations."""

from __future__ import annotations

import logging

import libvirt
import pytest
from oslo_config import cfg

from hypervisor_notifier.backends.libvirt import faultcodes, faultevents
from hypervisor_notifier.backends.libvirt.backend import DomainEvent, LibvirtBackend
from hypervisor_notifier.backends.libvirt.listing import Origin
from hypervisor_notifier.conf import register_opts
from hypervisor_notifier.events import Observation, Transition
from hypervisor_notifier.faults import Fault, FaultObservation
from tests.libvirt_factories import libvirt_error

# -- the tables against libvirt --------------------------------------------------------


def binding_names(prefix: str) -> dict[str, int]:
    """The binding's constants that start with ``prefix``: lower-case rest -> code."""
    return {
        n[len(prefix) :].lower(): getattr(libvirt, n) for n in dir(libvirt) if n.startswith(prefix)
    }


@pytest.mark.parametrize(
    ("names", "prefix"),
    [
        (faultcodes.WATCHDOG_ACTIONS, "VIR_DOMAIN_EVENT_WATCHDOG_"),
        (faultcodes.IO_ERROR_ACTIONS, "VIR_DOMAIN_EVENT_IO_ERROR_"),
        (faultcodes.AGENT_REASONS, "VIR_CONNECT_DOMAIN_EVENT_AGENT_LIFECYCLE_REASON_"),
        (faultcodes.MEMORY_FAILURE_RECIPIENTS, "VIR_DOMAIN_EVENT_MEMORY_FAILURE_RECIPIENT_"),
        (faultcodes.MEMORY_FAILURE_ACTIONS, "VIR_DOMAIN_EVENT_MEMORY_FAILURE_ACTION_"),
    ],
    ids=["watchdog", "io_error", "agent_reason", "memory_recipient", "memory_action"],
)
def test_code_names_are_the_bindings_in_order_and_complete(names, prefix):
    # A libvirt that adds an action fails here: extend the table.
    assert binding_names(prefix) == {name: code for code, name in enumerate(names)}


def test_agent_states_and_memory_failure_flags_are_the_bindings():
    states = binding_names("VIR_CONNECT_DOMAIN_EVENT_AGENT_LIFECYCLE_STATE_")
    flags = binding_names("VIR_DOMAIN_MEMORY_FAILURE_")

    assert {f"agent_{n}": code for n, code in states.items()} == {
        fault.value: code for code, fault in faultcodes.AGENT_STATES.items()
    }
    assert flags == faultcodes.MEMORY_FAILURE_FLAGS


# -- callbacks -> queue items -> observations ----------------------------------------


class Domain:
    """What the backend reads of a domain: local struct, state and XML (the RPCs)."""

    def __init__(self, state=(libvirt.VIR_DOMAIN_CRASHED, libvirt.VIR_DOMAIN_CRASHED_PANICKED),
                 xml="<domain><on_crash>preserve</on_crash><devices><panic model='isa'/>"
                     "</devices></domain>") -> None:  # fmt: skip
        self._state, self._xml = state, xml

    def UUIDString(self) -> str:  # libvirt's names
        return "uuid-1"

    def name(self) -> str:
        return "vm-1"

    def ID(self) -> int:
        return 7

    def state(self) -> list[int]:
        if isinstance(self._state, Exception):
            raise self._state
        return list(self._state)

    def XMLDesc(self, _flags: int) -> str:
        return self._xml


@pytest.fixture
def backend() -> LibvirtBackend:
    conf = cfg.ConfigOpts()
    register_opts(conf)
    conf([], default_config_files=[], default_config_dirs=[])
    return LibvirtBackend(conf)


def reported(backend: LibvirtBackend):
    """Translate every queued item, as the dispatch thread does."""
    observations = []
    while not backend._queue.empty():
        observation = backend._translate(backend._queue.get_nowait())
        if observation is not None:
            observations.append(observation)
    return observations


CB = faultevents.FaultCallbacks


@pytest.mark.parametrize(
    ("call", "fault", "reason", "detail", "details"),
    [
        (lambda cb, d: cb._on_watchdog(None, d, libvirt.VIR_DOMAIN_EVENT_WATCHDOG_PAUSE, None),
         Fault.WATCHDOG, "WATCHDOG", "PAUSE", {"action": "pause"}),
        (lambda cb, d: cb._on_watchdog(None, d, libvirt.VIR_DOMAIN_EVENT_WATCHDOG_INJECTNMI, None),
         Fault.WATCHDOG, "WATCHDOG", "INJECTNMI", {"action": "injectnmi"}),
        (lambda cb, d: cb._on_io_error_reason(None, d, "/var/lib/disk.img", "virtio-disk0",
                                              libvirt.VIR_DOMAIN_EVENT_IO_ERROR_REPORT, "enospc",
                                              None),
         Fault.IO_ERROR, "IO_ERROR_REASON", "REPORT",
         {"device": "virtio-disk0", "path": "/var/lib/disk.img", "action": "report",
          "error": "enospc"}),
        # A network disk has no path; libvirt hands None.
        (lambda cb, d: cb._on_io_error_reason(None, d, None, "virtio-disk1", 1, "", None),
         Fault.IO_ERROR, "IO_ERROR_REASON", "PAUSE",
         {"device": "virtio-disk1", "path": "", "action": "pause", "error": ""}),
        (lambda cb, d: cb._on_io_error(None, d, "/disk", "ide0-0-0", 0, None),
         Fault.IO_ERROR, "IO_ERROR", "NONE",
         {"device": "ide0-0-0", "path": "/disk", "action": "none"}),
        (lambda cb, d: cb._on_control_error(None, d, None),
         Fault.CONTROL_ERROR, "CONTROL_ERROR", "", {}),
        (lambda cb, d: cb._on_agent_lifecycle(None, d, 1, 2, None),
         Fault.AGENT_CONNECTED, "AGENT_LIFECYCLE", "CHANNEL",
         {"state": "connected", "reason": "channel"}),
        (lambda cb, d: cb._on_agent_lifecycle(None, d, 2, 1, None),
         Fault.AGENT_DISCONNECTED, "AGENT_LIFECYCLE", "DOMAIN_STARTED",
         {"state": "disconnected", "reason": "domain_started"}),
        (lambda cb, d: cb._on_memory_failure(None, d, 1, 1, 1, None),
         Fault.MEMORY_FAILURE, "MEMORY_FAILURE", "INJECT",
         {"recipient": "guest", "action": "inject", "action_required": True, "recursive": False}),
        (lambda cb, d: cb._on_memory_failure(None, d, 0, 2, 2, None),
         Fault.MEMORY_FAILURE, "MEMORY_FAILURE", "FATAL",
         {"recipient": "hypervisor", "action": "fatal", "action_required": False,
          "recursive": True}),
        (lambda cb, d: cb._on_device_removed(None, d, "net1", None),
         Fault.DEVICE_REMOVED, "DEVICE_REMOVED", "", {"device": "net1"}),
        (lambda cb, d: cb._on_device_removal_failed(None, d, "ua-disk", None),
         Fault.DEVICE_REMOVAL_FAILED, "DEVICE_REMOVAL_FAILED", "", {"device": "ua-disk"}),
        # Codes newer than the tables keep their number.
        (lambda cb, d: cb._on_watchdog(None, d, 42, None),
         Fault.WATCHDOG, "WATCHDOG", "ACTION_42", {"action": "action_42"}),
        (lambda cb, d: cb._on_agent_lifecycle(None, d, 1, 9, None),
         Fault.AGENT_CONNECTED, "AGENT_LIFECYCLE", "REASON_9",
         {"state": "connected", "reason": "reason_9"}),
    ],
    ids=["watchdog", "watchdog-injectnmi", "io-error-reason", "io-error-no-path", "io-error-old",
         "control-error", "agent-connected", "agent-disconnected", "memory-guest",
         "memory-hypervisor", "device-removed", "device-removal-failed", "watchdog-newer",
         "agent-newer-reason"],
)  # fmt: skip
def test_each_fault_callback_becomes_its_fault_observation(
    backend, call, fault, reason, detail, details
):
    call(backend._faults, Domain())
    item = backend._queue.get_nowait()
    (observation,) = [backend._translate(item)]

    assert isinstance(item, DomainEvent)
    assert isinstance(observation, FaultObservation)
    assert (observation.instance_uuid, observation.instance_name) == ("uuid-1", "vm-1")
    assert (observation.fault, observation.reason, observation.detail) == (fault, reason, detail)
    assert dict(observation.details) == details
    assert observation.occurred_at == item.occurred_at


def test_an_agent_state_newer_than_the_table_is_not_reported(backend):
    backend._faults._on_agent_lifecycle(None, Domain(), 9, 0, None)

    assert backend._queue.empty()


class Lister:
    """A lister that knows every domain was launched by ``origin``."""

    def __init__(self, origin: Origin) -> None:
        self._origin = origin

    def origin(self, _dom, _uuid=None) -> Origin:
        return self._origin


@pytest.mark.parametrize(("origin", "kinds"), [(Origin.NOVA, [FaultObservation, Observation]),
                                              (Origin.OTHER, [])])  # fmt: skip
def test_faults_follow_the_report_filter_like_lifecycle_events(backend, origin, kinds):
    # The default filter: guests nova launched only.
    backend._lister = Lister(origin)
    backend._faults._on_watchdog(None, Domain(), 1, None)
    backend._on_lifecycle(None, Domain(), libvirt.VIR_DOMAIN_EVENT_SUSPENDED, 3, None)

    assert [type(o) for o in reported(backend)] == kinds


# -- a crashed guest's details -----------------------------------------------------------


def crashed(backend: LibvirtBackend, dom: Domain) -> Observation:
    backend._on_lifecycle(
        None,
        dom,
        libvirt.VIR_DOMAIN_EVENT_CRASHED,
        libvirt.VIR_DOMAIN_EVENT_CRASHED_PANICKED,
        None,
    )
    (observation,) = reported(backend)
    assert isinstance(observation, Observation) and observation.transition is Transition.CRASHED
    return observation


def test_a_panicked_guest_reports_its_on_crash_panic_device_and_state(backend):
    observation = crashed(backend, Domain())

    assert (observation.reason, observation.detail) == ("CRASHED", "PANICKED")
    assert dict(observation.details) == {
        "on_crash": "preserve",
        "panic_model": "isa",
        "state": "crashed",
        "state_reason": "panicked",
    }


def test_a_guest_destroyed_on_crash_says_so_and_libvirts_default_action(backend):
    dom = Domain((libvirt.VIR_DOMAIN_SHUTOFF, libvirt.VIR_DOMAIN_SHUTOFF_CRASHED), "<domain/>")

    assert dict(crashed(backend, dom).details) == {
        "on_crash": "destroy",
        "state": "shutoff",
        "state_reason": "crashed",
    }


def test_a_guest_gone_before_its_crash_is_read_is_reported_without_details(backend, caplog):
    caplog.set_level(logging.INFO)
    dom = Domain(libvirt_error(libvirt.VIR_ERR_NO_DOMAIN))

    assert dict(crashed(backend, dom).details) == {}
    assert "cannot read the crash of vm-1" in caplog.text


def test_other_lifecycle_events_read_nothing_of_the_guest(backend):
    dom = Domain(AssertionError("no RPC for a pause"))
    backend._on_lifecycle(None, dom, libvirt.VIR_DOMAIN_EVENT_SUSPENDED, 0, None)

    (observation,) = reported(backend)
    assert dict(observation.details) == {}


@pytest.mark.parametrize(
    ("state", "reason", "names"),
    [
        (libvirt.VIR_DOMAIN_CRASHED, libvirt.VIR_DOMAIN_CRASHED_PANICKED, ("crashed", "panicked")),
        (libvirt.VIR_DOMAIN_RUNNING, libvirt.VIR_DOMAIN_RUNNING_CRASHED, ("running", "crashed")),
        (libvirt.VIR_DOMAIN_PAUSED, libvirt.VIR_DOMAIN_PAUSED_CRASHED, ("paused", "crashed")),
        (libvirt.VIR_DOMAIN_RUNNING, 99, ("running", "reason_99")),
        # SHUTDOWN's reason constants clash with virDomainShutdown's flags: not named.
        (libvirt.VIR_DOMAIN_SHUTDOWN, 1, ("shutdown", "reason_1")),
        (99, 0, ("state_99", "reason_0")),
    ],
)
def test_state_names_are_the_bindings(state, reason, names):
    assert faultevents.state_names(state, reason) == names


# -- registration ----------------------------------------------------------------------


class Connection:
    """Records registrations; refuses the event IDs in ``refused`` with ``error``."""

    def __init__(self, refused=(), error=libvirt.VIR_ERR_INVALID_ARG) -> None:
        self.registered: list[int] = []
        self._refused, self._error = set(refused), error

    def domainEventRegisterAny(self, _dom, event_id, _callback, _opaque) -> int:
        if event_id in self._refused:
            raise libvirt_error(self._error)
        self.registered.append(event_id)
        return 100 + event_id


ALL = [libvirt.VIR_DOMAIN_EVENT_ID_WATCHDOG, libvirt.VIR_DOMAIN_EVENT_ID_IO_ERROR_REASON,
       libvirt.VIR_DOMAIN_EVENT_ID_CONTROL_ERROR, libvirt.VIR_DOMAIN_EVENT_ID_AGENT_LIFECYCLE,
       libvirt.VIR_DOMAIN_EVENT_ID_MEMORY_FAILURE, libvirt.VIR_DOMAIN_EVENT_ID_DEVICE_REMOVED,
       libvirt.VIR_DOMAIN_EVENT_ID_DEVICE_REMOVAL_FAILED]  # fmt: skip


def test_every_fault_event_is_registered_once():
    conn = Connection()

    ids = CB(lambda dom, translation: None).register(conn)

    assert conn.registered == ALL
    assert ids == [100 + event_id for event_id in ALL]


def test_an_event_the_daemon_refuses_costs_that_fault_only(caplog):
    conn = Connection(refused={libvirt.VIR_DOMAIN_EVENT_ID_MEMORY_FAILURE})

    CB(lambda dom, translation: None).register(conn)

    assert conn.registered == [e for e in ALL if e != libvirt.VIR_DOMAIN_EVENT_ID_MEMORY_FAILURE]
    assert "refuses the MEMORY_FAILURE event" in caplog.text


def test_without_io_error_reason_the_older_io_error_is_registered():
    conn = Connection(refused={libvirt.VIR_DOMAIN_EVENT_ID_IO_ERROR_REASON})

    CB(lambda dom, translation: None).register(conn)

    assert libvirt.VIR_DOMAIN_EVENT_ID_IO_ERROR in conn.registered


def test_a_binding_without_an_event_skips_it(monkeypatch, caplog):
    monkeypatch.delattr(libvirt, "VIR_DOMAIN_EVENT_ID_MEMORY_FAILURE")
    conn = Connection()

    CB(lambda dom, translation: None).register(conn)

    assert len(conn.registered) == len(ALL) - 1
    assert "has no MEMORY_FAILURE event" in caplog.text


def test_a_broken_connection_while_registering_is_raised():
    conn = Connection(refused={libvirt.VIR_DOMAIN_EVENT_ID_WATCHDOG}, error=libvirt.VIR_ERR_RPC)

    with pytest.raises(libvirt.libvirtError):
        CB(lambda dom, translation: None).register(conn)
