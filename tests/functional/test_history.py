"""The history stream on the real RabbitMQ: ``hypervisor-events history`` and ``watch --since``.

Events are published by the real Publisher with ``history_stream`` set while
no consumer runs; the commands replay them from the stream afterwards.
"""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys

import pytest

from hypervisor_notifier import wire
from hypervisor_notifier.events import utcnow
from hypervisor_notifier.faults import Fault, FaultEvent, FaultObservation
from hypervisor_notifier.host_events import HostChange, HostEvent, HostObservation
from tests.factories import make_event

from .conftest import BROKER_URL, TIMEOUT, unique


@pytest.fixture
def stream(broker):
    name = unique("hn-history")
    yield name
    broker.queue_delete(name)


#: The broker URL as the command takes it best: from the environment, not argv.
ENV = {**os.environ, "HYPERVISOR_EVENTS_TRANSPORT_URL": BROKER_URL}


def events_command(names, stream, *args):
    return [sys.executable, "-m", "hypervisor_notifier.cmd.events", *args,
            "--exchange", names["exchange"], "--stream", stream, "--json"]  # fmt: skip


def test_history_replays_one_instances_events_in_order_after_nobody_consumed_them(
    names, stream, start_publisher
):
    publisher = start_publisher(history=(stream, wire.stream_arguments("1h", 10**8)))
    guest, other = str(make_event().instance_uuid), str(make_event().instance_uuid)
    old = make_event(host=names["host"], instance_uuid=guest, seq=1,
                     occurred_at=utcnow() - datetime.timedelta(hours=2))  # fmt: skip
    mine = [make_event(host=names["host"], instance_uuid=guest, seq=n) for n in (2, 4, 5)]
    theirs = make_event(host=names["host"], instance_uuid=other, seq=3)
    publisher.send(old, mine[0], theirs, mine[1], mine[2])

    result = subprocess.run(
        events_command(names, stream, "history", "--instance", guest, "--since", "10m"),
        capture_output=True, text=True, timeout=TIMEOUT, env=ENV,
    )  # fmt: skip

    assert result.returncode == 0, result.stderr
    replayed = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["event_id"] for line in replayed] == [event.event_id for event in mine]
    assert [line["seq"] for line in replayed] == [2, 4, 5]


def test_watch_since_replays_the_past_then_follows_new_events(names, stream, start_publisher):
    publisher = start_publisher(history=(stream, wire.stream_arguments("1h", 10**8)))
    guest = str(make_event().instance_uuid)
    before = [make_event(host=names["host"], instance_uuid=guest, seq=n) for n in (1, 2)]
    publisher.send(*before)
    watch = subprocess.Popen(
        events_command(names, stream, "watch", "--since", "5m", "--instance", guest,
                       "--count", "3"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV,
    )  # fmt: skip
    # The replayed past, before anything new is sent (lines read one by one:
    # communicate() would bypass what readline() buffered).
    lines = [watch.stdout.readline(), watch.stdout.readline()]
    after = make_event(host=names["host"], instance_uuid=guest, seq=3)
    publisher.send(after)
    lines.append(watch.stdout.readline())

    assert watch.wait(TIMEOUT) == 0, watch.stderr.read()
    shown = [json.loads(line)["event_id"] for line in lines]
    assert shown == [event.event_id for event in [*before, after]]
    watch.stdout.close()
    watch.stderr.close()


def test_history_without_a_stream_is_one_line_of_error(names):
    result = subprocess.run(
        [sys.executable, "-m", "hypervisor_notifier.cmd.events", "history", "--since", "1h"],
        capture_output=True, text=True, timeout=TIMEOUT, env=ENV,
    )  # fmt: skip

    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "hypervisor-events: error: no history stream: set [publisher] history_stream or --stream"
    ]


def test_history_shows_when_a_hosts_guests_were_unknown_and_its_faults(
    names, stream, start_publisher
):
    def stamped(kind, observation, seq):
        return kind.from_observation(observation, host=names["host"], hypervisor="libvirt",
                                     seq=seq)  # fmt: skip

    publisher = start_publisher(history=(stream, wire.stream_arguments("1h", 10**8)))
    guest = make_event(host=names["host"], seq=1)
    lost = HostObservation(HostChange.DISCONNECTED, "end of file", occurred_at=utcnow())
    back = HostObservation(HostChange.CONNECTED, "reconnected", occurred_at=utcnow(),
                           details={"listed": 1, "changed": 0, "vanished": 0})  # fmt: skip
    reset = FaultObservation(guest.instance_uuid, guest.instance_name, Fault.WATCHDOG,
                             "WATCHDOG", "RESET", occurred_at=utcnow(),
                             details={"action": "reset"})  # fmt: skip
    sent = [guest, stamped(HostEvent, lost, 2), stamped(HostEvent, back, 3),
            stamped(FaultEvent, reset, 4)]  # fmt: skip
    publisher.send(*sent)
    command = [sys.executable, "-m", "hypervisor_notifier.cmd.events", "history", "--since",
               "10m", "--exchange", names["exchange"], "--stream", stream]  # fmt: skip

    every = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT, env=ENV)
    hosts = subprocess.run([*command, "--kind", "host"], capture_output=True, text=True,
                           timeout=TIMEOUT, env=ENV)  # fmt: skip

    assert every.returncode == 0, every.stderr
    lines = every.stdout.splitlines()
    assert [line.split()[2:4] for line in lines] == [
        ["stopped", guest.instance_name],
        ["host", "disconnected"],
        ["host", "connected"],
        ["watchdog", guest.instance_name],
    ]
    assert 'reason="end of file"' in lines[1] and "listed=1" in lines[2]
    assert "action=reset" in lines[3]
    assert [line.split()[2:4] for line in hosts.stdout.splitlines()] == [
        ["host", "disconnected"], ["host", "connected"],
    ]  # fmt: skip
