"""libvirt's lifecycle (event, detail) codes and domain states, translated.

Pure data, no libvirt import: the codes are part of libvirt's stable ABI
(``virDomainEventType`` and its ``virDomainEvent*DetailType`` enums), and a
unit test checks them against the installed binding.
"""

from __future__ import annotations

import dataclasses

from hypervisor_notifier.events import PowerState, Transition

#: ``virDomainEventType`` code -> (name, detail names by detail code).
EVENTS: dict[int, tuple[str, tuple[str, ...]]] = {
    0: ("DEFINED", ("ADDED", "UPDATED", "RENAMED", "FROM_SNAPSHOT")),
    1: ("UNDEFINED", ("REMOVED", "RENAMED")),
    2: ("STARTED", ("BOOTED", "MIGRATED", "RESTORED", "FROM_SNAPSHOT", "WAKEUP")),
    3: (
        "SUSPENDED",
        (
            "PAUSED",
            "MIGRATED",
            "IOERROR",
            "WATCHDOG",
            "RESTORED",
            "FROM_SNAPSHOT",
            "API_ERROR",
            "POSTCOPY",
            "POSTCOPY_FAILED",
        ),
    ),
    4: ("RESUMED", ("UNPAUSED", "MIGRATED", "FROM_SNAPSHOT", "POSTCOPY", "POSTCOPY_FAILED")),
    5: (
        "STOPPED",
        ("SHUTDOWN", "DESTROYED", "CRASHED", "MIGRATED", "SAVED", "FAILED", "FROM_SNAPSHOT"),
    ),
    6: ("SHUTDOWN", ("FINISHED", "GUEST", "HOST")),
    7: ("PMSUSPENDED", ("MEMORY", "DISK")),
    8: ("CRASHED", ("PANICKED", "CRASHLOADED")),
}

#: What each event means, whatever its detail, except those of :data:`_EXCEPTIONS`:
#: (transition, power state), or None for events that change no power state (a
#: definition changed).
_EVENT_OUTCOME: dict[str, tuple[Transition, PowerState] | None] = {
    "DEFINED": None,
    "UNDEFINED": None,
    "STARTED": (Transition.STARTED, PowerState.RUNNING),
    # SUSPENDED/MIGRATED is also sent when a live migration fails: only
    # STOPPED/MIGRATED proves success.
    "SUSPENDED": (Transition.PAUSED, PowerState.PAUSED),
    "RESUMED": (Transition.RESUMED, PowerState.RUNNING),
    # STOPPED/CRASHED is on_crash=destroy: the guest is off (a preserved crash is CRASHED/*).
    "STOPPED": (Transition.STOPPED, PowerState.SHUTDOWN),
    # A guest that is shutting down still runs until STOPPED follows.
    "SHUTDOWN": (Transition.SHUTTING_DOWN, PowerState.RUNNING),
    "PMSUSPENDED": (Transition.SUSPENDED, PowerState.SUSPENDED),
    "CRASHED": (Transition.CRASHED, PowerState.CRASHED),
}

#: The details that mean more than their event.
_EXCEPTIONS: dict[tuple[str, str], tuple[Transition, PowerState]] = {
    ("SUSPENDED", "POSTCOPY"): (Transition.POSTCOPY_STARTED, PowerState.PAUSED),
    # The source side of a successful migration: the guest left this host.
    ("STOPPED", "MIGRATED"): (Transition.MIGRATION_COMPLETED, PowerState.SHUTDOWN),
}

#: The complete table: (event name, detail name) -> (transition, power state),
#: or None for events that change no power state.
TABLE: dict[tuple[str, str], tuple[Transition, PowerState] | None] = {
    (name, detail): _EXCEPTIONS.get((name, detail), _EVENT_OUTCOME[name])
    for name, details in EVENTS.values()
    for detail in details
}

#: A detail code newer than this table keeps its event's usual meaning.
_EVENT_DEFAULT = _EVENT_OUTCOME

#: ``virDomainState`` code -> (name, power state). nova maps SHUTDOWN (a
#: guest being shut down) to its SHUTDOWN power state; it still runs, and
#: reporting it running keeps listings consistent with SHUTTING_DOWN events.
STATES: dict[int, tuple[str, PowerState]] = {
    0: ("NOSTATE", PowerState.NOSTATE),
    1: ("RUNNING", PowerState.RUNNING),
    2: ("BLOCKED", PowerState.RUNNING),
    3: ("PAUSED", PowerState.PAUSED),
    4: ("SHUTDOWN", PowerState.RUNNING),
    5: ("SHUTOFF", PowerState.SHUTDOWN),
    6: ("CRASHED", PowerState.CRASHED),
    7: ("PMSUSPENDED", PowerState.SUSPENDED),
}


@dataclasses.dataclass(frozen=True)
class Translation:
    """A lifecycle event's meaning, with libvirt's raw names.

    Arguments:
        reason: libvirt's event name (``STOPPED``).
        detail: libvirt's detail name (``SHUTDOWN``), or ``DETAIL_<n>`` if unknown.
        outcome: (transition, power state), or None when no power state changed.

    """

    reason: str
    detail: str
    outcome: tuple[Transition, PowerState] | None


#: The reboot event (``VIR_DOMAIN_EVENT_ID_REBOOT``, no detail): the guest
#: reset itself and runs on; it has no (event, detail) code of its own.
REBOOT = Translation("REBOOT", "", (Transition.REBOOTED, PowerState.RUNNING))


def translate(event: int, detail: int) -> Translation:
    """Translate a lifecycle (event, detail) pair; codes newer than the table are kept raw."""
    try:
        reason, detail_names = EVENTS[event]
    except KeyError:
        return Translation(f"EVENT_{event}", f"DETAIL_{detail}", None)
    if 0 <= detail < len(detail_names):
        return Translation(reason, detail_names[detail], TABLE[(reason, detail_names[detail])])
    return Translation(reason, f"DETAIL_{detail}", _EVENT_DEFAULT[reason])


def state(code: int) -> tuple[str, PowerState]:
    """Return the name and power state of a ``virDomainState`` code."""
    return STATES.get(code, (f"STATE_{code}", PowerState.NOSTATE))
