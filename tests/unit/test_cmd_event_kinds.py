"""``hypervisor-events watch`` and ``history`` print every kind: a line per kind, ``--kind``."""

from __future__ import annotations

import json

import pytest

from hypervisor_notifier.cmd.events import Watch, build_parser, format_line
from hypervisor_notifier.events import Transition, utcnow
from hypervisor_notifier.faults import Fault, FaultEvent, FaultObservation
from hypervisor_notifier.host_events import HostChange, HostEvent, HostObservation
from tests.factories import make_event

INSTANCE_UUID = "6e9a4d5c-1b2f-4a8e-b3c7-d0e1f2a3b4c5"


def host_event(change: HostChange = HostChange.DISCONNECTED, **details) -> HostEvent:
    reason = "end of file" if change is HostChange.DISCONNECTED else "reconnected"
    return HostEvent.from_observation(
        HostObservation(change, reason, occurred_at=utcnow(), details=details),
        host="compute1.example.org", hypervisor="libvirt", seq=41,
    )  # fmt: skip


def fault_event(instance_uuid: str = INSTANCE_UUID) -> FaultEvent:
    return FaultEvent.from_observation(
        FaultObservation(instance_uuid, "instance-0000002a", Fault.IO_ERROR, "IO_ERROR_REASON",
                         "PAUSE", occurred_at=utcnow(),
                         details={"device": "vda", "error": "enospc"}),
        host="compute1.example.org", hypervisor="libvirt", seq=42,
    )  # fmt: skip


@pytest.fixture
def printed(capsys):
    return lambda: capsys.readouterr().out.splitlines()


def test_a_host_event_line_says_what_the_connection_did_and_why():
    line = format_line(host_event(), latency_ms=3.0)

    for expected in ("compute1.example.org", "host disconnected", "hypervisor=libvirt",
                     'reason="end of file"', "seq=41", "latency=3.0ms"):  # fmt: skip
        assert expected in line
    assert "None" not in line and "power_state" not in line


def test_connected_shows_what_the_resync_found():
    event = host_event(HostChange.CONNECTED, listed=3, changed=1, vanished=1, down_seconds=4.5)

    line = format_line(event, latency_ms=1.0)

    assert "host connected" in line and "reason=reconnected" in line
    assert "changed=1 down_seconds=4.5 listed=3 vanished=1" in line


def test_a_fault_line_names_the_guest_the_fault_and_its_details():
    line = format_line(fault_event(), latency_ms=1.0)

    for expected in ("io_error", "instance-0000002a", INSTANCE_UUID,
                     "reason=IO_ERROR_REASON/PAUSE", "device=vda", "error=enospc"):  # fmt: skip
        assert expected in line


def test_a_vanished_guest_line_is_not_a_stop():
    event = make_event(transition=Transition.VANISHED, details={"last_power_state": 1})

    line = format_line(event, latency_ms=1.0, colour=True)

    assert "vanished" in line and "last_power_state=1" in line
    assert "\033[31m" not in line  # not in the red of what stops a guest


def test_colour_marks_a_lost_connection_red_and_a_restored_one_green():
    assert "\033[31mhost disconnected" in format_line(host_event(), 0, colour=True)
    assert "\033[32mhost connected" in format_line(host_event(HostChange.CONNECTED), 0, True)


def test_watch_prints_every_kind_by_default(printed):
    watch = Watch(instance=None, as_json=True, count=3)
    events = [make_event(), fault_event(), host_event()]

    for event in events:
        watch(event)

    assert [json.loads(line)["event_id"] for line in printed()] == [e.event_id for e in events]
    assert watch.done.is_set()


@pytest.mark.parametrize(
    ("kinds", "expected"),
    [(["host"], ["host"]), (["fault", "lifecycle"], ["lifecycle", "fault"])],
)
def test_watch_prints_only_the_chosen_kinds(printed, kinds, expected):
    watch = Watch(instance=None, as_json=True, count=None, kinds=kinds)
    events = {"lifecycle": make_event(), "fault": fault_event(), "host": host_event()}

    for event in events.values():
        watch(event)

    assert [json.loads(line)["event_id"] for line in printed()] == [
        events[kind].event_id for kind in expected
    ]


def test_an_instance_or_a_transition_chooses_guest_events_only(printed):
    by_instance = Watch(instance=INSTANCE_UUID, as_json=True, count=None)
    by_transition = Watch(instance=None, as_json=True, count=None,
                          transitions=[Transition.STOPPED])  # fmt: skip
    fault = fault_event()
    stopped = make_event(transition=Transition.STOPPED)

    for watch in (by_instance, by_transition):
        for event in (host_event(), fault, stopped):
            watch(event)

    assert [json.loads(line)["event_id"] for line in printed()] == [
        fault.event_id, stopped.event_id,
    ]  # fmt: skip


def test_the_kind_option_is_checked():
    assert build_parser().parse_args(["watch", "--kind", "host"]).kind == ["host"]
    with pytest.raises(SystemExit):
        build_parser().parse_args(["watch", "--kind", "power"])
