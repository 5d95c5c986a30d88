"""How ``hypervisor-events`` prints an event: one line per event, a format per kind.

Every line starts with the time and the host, then a column naming what
happened (a guest's transition, its fault, or ``host <change>``), then what
the operator looks for in that kind, then ``seq`` and the delivery latency.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from hypervisor_notifier import events
from hypervisor_notifier.events import Scalar, Transition
from hypervisor_notifier.faults import Fault, FaultEvent
from hypervisor_notifier.host_events import HostChange, HostEvent
from hypervisor_notifier.wire import WireEvent

# ANSI colours of the second column: what stops a guest or loses the host red, what
# runs it green, what leaves it in between (or unknown) yellow.
_RED, _GREEN, _YELLOW, _RESET = "\033[31m", "\033[32m", "\033[33m", "\033[0m"
_COLOURS: Mapping[object, str] = {
    Transition.STOPPED: _RED,
    Transition.CRASHED: _RED,
    Transition.SHUTTING_DOWN: _RED,
    Transition.STARTED: _GREEN,
    Transition.RESUMED: _GREEN,
    Transition.REBOOTED: _GREEN,
    Transition.PAUSED: _YELLOW,
    Transition.SUSPENDED: _YELLOW,
    Transition.VANISHED: _YELLOW,
    HostChange.DISCONNECTED: _RED,
    HostChange.CONNECTED: _GREEN,
    # Faults are what goes wrong, whichever: yellow.
    **dict.fromkeys(Fault, _YELLOW),
}
_WIDTH = 19


def _column(name: str, key: object, colour: bool) -> str:
    text = f"{name:<{_WIDTH}}"
    shade = _COLOURS.get(key, "")
    return f"{shade}{text}{_RESET}" if colour and shade else text


def _value(value: Scalar) -> str:
    # JSON for what would not read as one word (spaces, empty, null).
    if isinstance(value, str) and value and " " not in value and '"' not in value:
        return value
    return json.dumps(value)


def format_details(details: Mapping[str, Scalar]) -> str:
    """``key=value`` pairs, sorted by key; a value with spaces in JSON quotes."""
    return " ".join(f"{key}={_value(value)}" for key, value in sorted(details.items()))


def format_line(event: WireEvent, latency_ms: float, colour: bool = False) -> str:
    """One human-readable line for an event of any kind; ``colour``: its column in ANSI colour."""
    if isinstance(event, HostEvent):
        middle = (
            f"{_column('host ' + event.change.value, event.change, colour)} "
            f"hypervisor={event.hypervisor} reason={_value(event.reason)}"
        )
    elif isinstance(event, FaultEvent):
        middle = (
            f"{_column(event.fault.value, event.fault, colour)} "
            f"{event.instance_name} ({event.instance_uuid}) reason={event.reason}/{event.detail}"
        )
    else:
        middle = (
            f"{_column(event.transition.value, event.transition, colour)} "
            f"{event.instance_name} ({event.instance_uuid}) "
            f"power_state={event.power_state.name} reason={event.reason}/{event.detail}"
        )
    details = f" {format_details(event.details)}" if event.details else ""
    flags = (" resync" if getattr(event, "resync", False) else "") + (
        " verified" if event.verified else ""
    )
    return (
        f"{events.format_time(event.occurred_at)} {event.host} {middle}{details} "
        f"seq={event.seq} latency={latency_ms:.1f}ms{flags}"
    )


def format_json(event: WireEvent, latency_ms: float, colour: bool = False) -> str:
    """The event's wire payload as one JSON line, plus ``latency_ms`` and ``verified``."""
    return json.dumps(
        {**event.to_payload(), "latency_ms": round(latency_ms, 3), "verified": event.verified}
    )
