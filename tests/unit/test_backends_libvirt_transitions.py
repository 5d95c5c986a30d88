"""libvirt's (event, detail) codes and domain states, checked against the installed binding."""

from __future__ import annotations

import libvirt
import pytest

from hypervisor_notifier.backends.libvirt import transitions
from hypervisor_notifier.backends.libvirt.transitions import EVENTS, STATES, TABLE, translate
from hypervisor_notifier.events import PowerState, Transition

PREFIX = "VIR_DOMAIN_EVENT_"

#: VIR_DOMAIN_EVENT_* constants that are not lifecycle events: the event IDs
#: (virDomainEventID) and the detail enums of the other event IDs (graphics
#: phases and address families, I/O error actions, disk and tray change
#: reasons, watchdog actions, memory failure recipients and actions).
NOT_LIFECYCLE = (
    "ID_",
    "GRAPHICS_",
    "IO_ERROR_",
    "DISK_",
    "TRAY_CHANGE_",
    "WATCHDOG_",
    "MEMORY_FAILURE_",
)


def lifecycle_constants() -> set[str]:
    """Every virDomainEventType and virDomainEvent*DetailType name the binding has."""
    return {
        name
        for name in dir(libvirt)
        if name.startswith(PREFIX) and not name[len(PREFIX) :].startswith(NOT_LIFECYCLE)
    }


def detail_names(event: str) -> list[str]:
    """The installed binding's detail names of one lifecycle event."""
    head = f"{PREFIX}{event}_"
    return sorted(name[len(head) :] for name in lifecycle_constants() if name.startswith(head))


def codes(event: str, detail: str) -> tuple[int, int]:
    """libvirt's (event, detail) codes, as a lifecycle callback receives them."""
    return getattr(libvirt, f"{PREFIX}{event}"), getattr(libvirt, f"{PREFIX}{event}_{detail}")


# -- the tables against libvirt --------------------------------------------------------


@pytest.mark.parametrize(
    ("event_code", "name", "details"),
    [(event_code, name, details) for event_code, (name, details) in EVENTS.items()],
    ids=[name for name, _ in EVENTS.values()],
)
def test_event_and_detail_codes_equal_libvirts(event_code, name, details):
    assert getattr(libvirt, f"{PREFIX}{name}") == event_code
    for detail_code, detail in enumerate(details):
        assert getattr(libvirt, f"{PREFIX}{name}_{detail}") == detail_code, detail


def test_every_lifecycle_constant_of_the_binding_is_in_the_table():
    # A libvirt that adds an event or a detail fails here: extend EVENTS and TABLE.
    ours = {f"{PREFIX}{name}" for name, _ in EVENTS.values()} | {
        f"{PREFIX}{name}_{detail}" for name, details in EVENTS.values() for detail in details
    }

    assert lifecycle_constants() - ours == set()


def test_the_filter_sees_the_lifecycle_constants():
    # Guards the filter above: it must not hide the constants it is meant to compare.
    assert {f"{PREFIX}STOPPED", f"{PREFIX}STOPPED_SHUTDOWN", f"{PREFIX}CRASHED_PANICKED"} <= (
        lifecycle_constants()
    )
    assert f"{PREFIX}ID_LIFECYCLE" not in lifecycle_constants()


def test_table_covers_every_event_and_detail_pair():
    pairs = {(name, detail) for name, details in EVENTS.values() for detail in details}

    assert set(TABLE) == pairs


@pytest.mark.parametrize(
    "state",
    ["NOSTATE", "RUNNING", "BLOCKED", "PAUSED", "SHUTDOWN", "SHUTOFF", "CRASHED", "PMSUSPENDED"],
)
def test_state_codes_equal_libvirts(state):
    by_name = {name: state_code for state_code, (name, _) in STATES.items()}

    assert by_name[state] == getattr(libvirt, f"VIR_DOMAIN_{state}")


# -- translate, against nova's mapping (nova/virt/libvirt/host.py) ---------------------


def _cases(event: str, outcome: tuple, *, but: tuple[str, ...] = ()) -> list:
    """One case per detail of ``event`` in the installed binding, each with ``outcome``."""
    return [
        pytest.param(event, detail, outcome, id=f"{event}/{detail}")
        for detail in detail_names(event)
        if detail not in but
    ]


@pytest.mark.parametrize(
    ("event", "detail", "outcome"),
    [
        *_cases("STOPPED", (Transition.STOPPED, PowerState.SHUTDOWN), but=("MIGRATED",)),
        *_cases("STARTED", (Transition.STARTED, PowerState.RUNNING)),
        *_cases("RESUMED", (Transition.RESUMED, PowerState.RUNNING)),
        *_cases("PMSUSPENDED", (Transition.SUSPENDED, PowerState.SUSPENDED)),
        pytest.param(
            "SUSPENDED", "PAUSED", (Transition.PAUSED, PowerState.PAUSED), id="SUSPENDED/PAUSED"
        ),
    ],
)
def test_translate_like_nova(event, detail, outcome):
    translation = translate(*codes(event, detail))

    assert translation.outcome == outcome
    assert (translation.reason, translation.detail) == (event, detail)


@pytest.mark.parametrize(
    ("event", "detail", "transition"),
    [
        ("SUSPENDED", "POSTCOPY", Transition.POSTCOPY_STARTED),
        ("STOPPED", "MIGRATED", Transition.MIGRATION_COMPLETED),
        # Not in nova: the guest began to shut down ('shutdown -h now' inside it).
        ("SHUTDOWN", "GUEST", Transition.SHUTTING_DOWN),
    ],
)
def test_translate_special_details(event, detail, transition):
    translation = translate(*codes(event, detail))

    assert translation.outcome is not None
    assert translation.outcome[0] is transition


@pytest.mark.parametrize(
    "pair",
    [("DEFINED", "ADDED"), ("DEFINED", "UPDATED"), ("UNDEFINED", "REMOVED")],
    ids="/".join,
)
def test_translate_definition_changes_to_no_outcome(pair):
    assert translate(*codes(*pair)).outcome is None


def test_an_unknown_detail_keeps_its_events_meaning_and_its_number():
    translation = translate(libvirt.VIR_DOMAIN_EVENT_STOPPED, 99)

    assert translation.reason == "STOPPED"
    assert translation.detail == "DETAIL_99"
    assert translation.outcome == (Transition.STOPPED, PowerState.SHUTDOWN)


def test_an_unknown_event_has_no_outcome():
    translation = translate(99, 0)

    assert translation.outcome is None
    assert "99" in translation.reason


@pytest.mark.parametrize(
    ("state", "power_state"),
    [
        ("NOSTATE", PowerState.NOSTATE),
        ("RUNNING", PowerState.RUNNING),
        ("BLOCKED", PowerState.RUNNING),
        ("PAUSED", PowerState.PAUSED),
        ("SHUTOFF", PowerState.SHUTDOWN),
        ("CRASHED", PowerState.CRASHED),
        ("PMSUSPENDED", PowerState.SUSPENDED),
    ],
)
def test_state_power_states_like_nova(state, power_state):
    assert transitions.state(getattr(libvirt, f"VIR_DOMAIN_{state}")) == (state, power_state)


def test_an_unknown_state_is_nostate():
    name, power_state = transitions.state(99)

    assert power_state is PowerState.NOSTATE
    assert "99" in name
