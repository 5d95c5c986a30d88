"""The service killed mid-burst, or signalled in any thread: nothing it had accepted is lost.

Each test prints its counts (visible with ``pytest -s``).
"""

from __future__ import annotations

import datetime
import os
import re
import signal
import sqlite3
import subprocess
from pathlib import Path

from hypervisor_notifier import wire
from hypervisor_notifier.events import PowerState

from .conftest import TIMEOUT
from .faults import (
    Burst,
    assert_no_duplicate_delivered,
    assert_seq_increasing,
    precondition,
    real_power_state,
    resync_lines,
    running_domains,
    sentinel_received,
    settle,
    wait_for_health,
)


def outbox_event_ids(path: Path) -> list[str]:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT body FROM events ORDER BY id").fetchall()
    finally:
        db.close()
    return [wire.decode(body).event_id for (body,) in rows]


EMIT_LINE = re.compile(r"\] \w+ \S+ \(([0-9a-f-]{36})\) \S+/\S+ seq=(\d+)$")


def test_service_killed_mid_burst_loses_nothing_it_had_received(
    tmp_path, make_domain, start_service, subscribe
):
    domains = running_domains(make_domain, 8)
    uuids = [d.UUIDString() for d in domains]
    subscriber, collector = subscribe()
    # debug: the killed service's log tells which events it had received.
    first = start_service(DEFAULT={"debug": "true"})
    for uuid in uuids:
        collector.wait_for(lambda e, uuid=uuid: e.instance_uuid == uuid)

    # As fast as libvirt goes, so the outbox holds events when the service dies.
    burst = Burst(domains, calls=2004)  # 4 domains end paused
    burst.start()
    try:
        burst.wait_count(1000)
        first.process.kill()
        killed_at_call = burst.count
        first.process.wait(TIMEOUT)
        killed_at = datetime.datetime.now(datetime.timezone.utc)
        left = outbox_event_ids(tmp_path / "outbox.sqlite")
    finally:
        burst.finish()
    # The calls after the kill happened while no service ran: only a resync tells them.
    state_at_restart = {d.UUIDString(): real_power_state(d) for d in domains}
    first_expected = {uuid: list(calls) for uuid, calls in burst.expected.items()}

    # What reached the subscriber from the killed service (let the queue drain first).
    settle(collector, uuids)
    before_restart = {event.event_id for event in collector.events}
    second = start_service()
    second.wait_for_log("resync (connected):")
    after = Burst(domains, calls=804)
    after.start()
    after.finish()
    sentinel_received(make_domain, collector)

    delivered = {event.event_id for event in collector.events}
    missing = [event_id for event_id in left if event_id not in delivered]
    # Those the killed service never got confirmed: only the restarted one sent them.
    recovered = len([event_id for event_id in left if event_id not in before_restart])
    assert not missing, f"{len(missing)} of the {len(left)} outbox events never arrived"
    assert_seq_increasing(collector, uuids)
    assert_no_duplicate_delivered(collector)

    dead_pushed = restart_resyncs = 0
    for dom in domains:
        uuid = dom.UUIDString()
        events = collector.of(uuid)
        # Final state: the last event received is the domain's real state.
        assert events[-1].power_state is real_power_state(dom), (uuid, events[-1])
        # First the killed service's start snapshot, then its pushed events: a prefix of
        # its calls, each once, in order.
        snapshot = events[0]
        assert snapshot.resync and snapshot.power_state is PowerState.RUNNING
        before = [e for e in events if not e.resync and e.occurred_at < killed_at]
        assert [e.transition for e in before] == first_expected[uuid][: len(before)]
        dead_pushed += len(before)
        # Then what the restart's resync published, then the second service's pushed
        # events: exactly its calls. Nothing else: no event of a call no service saw.
        restart_resync = [e for e in events if e.resync and e.occurred_at >= killed_at]
        later = [e for e in events if not e.resync and e.occurred_at >= killed_at]
        assert [e.transition for e in later] == after.expected[uuid]
        assert [e.event_id for e in events] == [
            e.event_id for e in [snapshot, *before, *restart_resync, *later]
        ]
        # The calls no service saw are covered by the restart's resync: once it is
        # done, the subscriber holds the state they left the domain in ...
        held = [snapshot, *before, *restart_resync][-1]
        assert held.power_state is state_at_restart[uuid], (uuid, resync_lines(second))
        # ... with one event at most.
        assert len(restart_resync) <= 1
        restart_resyncs += len(restart_resync)
    unseen_calls = burst.count - killed_at_call

    # Every event the killed service logged as received (it logs after the put, which
    # commits) arrived: its crash lost none it had accepted.
    logged = {
        (m.group(1), int(m.group(2)))
        for line in first.lines
        if (m := EMIT_LINE.search(line.rstrip())) and m.group(1) in uuids
    }
    arrived = {(e.instance_uuid, e.seq) for e in collector.events}
    vanished = sorted(seq for uuid, seq in logged - arrived)
    assert not vanished, f"{len(vanished)} events the killed service had accepted are lost"
    print(
        f"\nservice crash: killed after {killed_at_call} of {burst.calls} calls "
        f"({unseen_calls} more calls while no service ran), then {after.calls} calls; "
        f"{len(left)} events in the outbox file after the kill, all delivered "
        f"({recovered} of them only by the restarted service); "
        f"{dead_pushed} pushed events of the killed service delivered; "
        f"{len(logged)} events logged as received by it, all delivered; "
        f"{subscriber.stats.duplicates} duplicates filtered, {subscriber.stats.stale} stale; "
        f"states at the restart: {sorted(s.name for s in state_at_restart.values())}, "
        f"{restart_resyncs} of the 8 domains got a restart resync event; "
        f"{resync_lines(second).strip()}"
    )
    assert second.stop() == 0, second.log


def test_sigterm_stops_the_service_whichever_thread_receives_it(start_service):
    service = start_service()
    pid = service.process.pid
    with precondition("a running service"):
        service.wait_for_log("resync (connected):")
        port = service.health_port
        wait_for_health(port, 200)
    # A process-directed signal goes to any thread that does not block it; kill()
    # with a thread's id makes that thread the kernel's first choice.
    threads = sorted(int(tid) for tid in os.listdir(f"/proc/{pid}/task") if int(tid) != pid)
    os.kill(threads[0], signal.SIGTERM)
    try:
        status = service.process.wait(5)
    except subprocess.TimeoutExpired:
        status = None
        # The main thread is the kernel's first choice for a signal to the process.
        os.kill(pid, signal.SIGTERM)
        try:
            service.process.wait(TIMEOUT)
        except subprocess.TimeoutExpired:
            service.process.kill()
    print(
        f"\nSIGTERM via thread {threads[0]} of {pid} ({len(threads) + 1} threads): "
        f"exit status {status} after 5 s"
    )
    assert status == 0, "the service ignored SIGTERM"
