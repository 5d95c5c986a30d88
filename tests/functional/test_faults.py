"""Faults: broker outage, service crash, unusable outbox, refusing broker.

Real service process, real libvirtd (test driver), real RabbitMQ. Each test
prints its counts (visible with ``pytest -s``). The broker is stopped only
briefly (``rabbitmqctl stop_app``) and always started again in a ``finally``.
The disk-full tests mount a tmpfs (root needed). Other processes' guests on
the shared test driver are reported too: checks are made on this test's own.

A failing precondition raises :class:`PreconditionFailed`, to tell a broken
setup from the behaviour under test.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import re
import selectors
import signal
import socket
import sqlite3
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import amqp
import libvirt
import pytest
from prometheus_client.parser import text_string_to_metric_families

from hypervisor_notifier import wire
from hypervisor_notifier.events import PowerState, Transition

from .conftest import TIMEOUT, healthz, http_get

#: libvirt domain state -> the nova power state the service reports.
POWER_STATE = {
    libvirt.VIR_DOMAIN_RUNNING: PowerState.RUNNING,
    libvirt.VIR_DOMAIN_PAUSED: PowerState.PAUSED,
}
#: Transition -> the power state it leaves the guest in.
AFTER = {Transition.PAUSED: PowerState.PAUSED, Transition.RESUMED: PowerState.RUNNING}


# -- helpers -------------------------------------------------------------------


class FreshChannel:
    """Each method call on a channel of a new connection: survives broker restarts."""

    def __getattr__(self, method: str) -> Callable[..., object]:
        def call(*args: object, **kwargs: object) -> object:
            with amqp.Connection("127.0.0.1:5672", userid="guest", password="guest") as conn:
                return getattr(conn.channel(), method)(*args, **kwargs)

        return call


@pytest.fixture
def broker() -> FreshChannel:
    """Overrides conftest's: its one connection would not survive ``stop_app``."""
    return FreshChannel()


def rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", *args], check=True, capture_output=True, timeout=60)


def start_broker() -> None:
    rabbitmqctl("start_app")
    rabbitmqctl("await_startup")


@contextlib.contextmanager
def broker_stopped() -> Iterator[None]:
    """Stop the broker's application; always start it again."""
    try:
        rabbitmqctl("stop_app")
        yield
    finally:
        start_broker()


def sample_key(name: str, labels: dict[str, str]) -> str:
    """``name{label="value",...}``, as the exposition writes it."""
    if not labels:
        return name
    return name + "{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"


def metrics(port: int) -> dict[str, float]:
    """Every sample of /metrics, keyed by ``sample_key``."""
    status, text = http_get(port, "/metrics")
    assert status == 200, text
    return {
        sample_key(sample.name, sample.labels): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def wait_until(
    condition: Callable[[], object],
    timeout: float = TIMEOUT,
    what: str | Callable[[], str] = "",
) -> None:
    """Poll ``condition``; fail with ``what`` (or what it returns then) after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            message = what() if callable(what) else what
            raise AssertionError(f"not true after {timeout} s: {message or condition}")
        time.sleep(0.05)


def wait_for_health(port: int, want: int, timeout: float = TIMEOUT) -> dict:
    """Poll /healthz until it answers ``want``; return its body."""
    seen: list[tuple[int, dict]] = []

    def answered() -> bool:
        seen[:] = [healthz(port)]
        return seen[0][0] == want

    wait_until(answered, timeout, lambda: f"/healthz {want}; last answer {seen}")
    return seen[0][1]


class Burst(threading.Thread):
    """Suspend and resume each domain in turn, ``calls`` libvirt calls in all.

    ``expected[uuid]`` is the transitions the calls made, in order;
    ``count`` is the number of calls made so far. ``pace`` seconds of sleep
    after each call spread the burst out (0: as fast as libvirt goes).
    """

    def __init__(self, domains: list[libvirt.virDomain], calls: int, pace: float = 0.0) -> None:
        super().__init__(name="burst", daemon=True)
        self.domains = domains
        self.calls = calls
        self.pace = pace
        self.count = 0
        self.expected: dict[str, list[Transition]] = {d.UUIDString(): [] for d in domains}
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            paused = {
                d.UUIDString(): d.state()[0] == libvirt.VIR_DOMAIN_PAUSED for d in self.domains
            }
            while self.count < self.calls:
                dom = self.domains[self.count % len(self.domains)]
                uuid = dom.UUIDString()
                if paused[uuid]:
                    dom.resume()
                    self.expected[uuid].append(Transition.RESUMED)
                else:
                    dom.suspend()
                    self.expected[uuid].append(Transition.PAUSED)
                paused[uuid] = not paused[uuid]
                self.count += 1
                if self.pace:
                    time.sleep(self.pace)
        except BaseException as exc:
            self.error = exc

    def wait_count(self, count: int) -> None:
        wait_until(lambda: self.count >= count or not self.is_alive(), what=f"{count} calls")

    def finish(self) -> None:
        self.join(TIMEOUT)
        assert not self.is_alive(), "the burst did not finish"
        if self.error is not None:
            raise self.error


def running_domains(make_domain, count: int) -> list[libvirt.virDomain]:
    domains = [make_domain() for _ in range(count)]
    for dom in domains:
        dom.create()
    return domains


def real_power_state(dom: libvirt.virDomain) -> PowerState:
    return POWER_STATE[dom.state()[0]]


def sentinel_received(make_domain, collector) -> None:
    """Start a fresh domain and wait for its event: one ordered stream per host,
    so every event the service published before it has been received."""
    sentinel = make_domain()
    sentinel.create()
    collector.wait_for(lambda e: e.instance_uuid == sentinel.UUIDString() and not e.resync)


def settle(collector, uuids, quiet: float = 0.5, timeout: float = 10.0) -> None:
    """Wait (at most ``timeout``) until no event of ``uuids`` arrived for ``quiet`` s."""

    def count() -> int:
        return sum(len(collector.of(uuid)) for uuid in uuids)

    deadline = time.monotonic() + timeout
    seen = count()
    while time.monotonic() < deadline:
        time.sleep(quiet)
        if count() == seen:
            return
        seen = count()


def assert_seq_increasing(collector, uuids) -> None:
    for uuid in uuids:
        seqs = [event.seq for event in collector.of(uuid)]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs), (uuid, seqs)


def assert_no_duplicate_delivered(collector) -> None:
    ids = [event.event_id for event in collector.events]
    assert len(ids) == len(set(ids)), "the subscriber delivered an event_id twice"


class PreconditionFailed(Exception):
    """A step before the checked behaviour failed: the setup, not the behaviour under test."""


@contextlib.contextmanager
def precondition(what: str) -> Iterator[None]:
    try:
        yield
    except AssertionError as exc:
        raise PreconditionFailed(f"{what}: {exc}") from exc


# -- 1. broker outage ----------------------------------------------------------


def test_broker_outage_mid_burst_loses_nothing_and_duplicates_nothing(
    make_domain, start_service, subscribe
):
    domains = running_domains(make_domain, 8)
    uuids = [d.UUIDString() for d in domains]
    subscriber, collector = subscribe()
    service = start_service()
    port = service.health_port
    for uuid in uuids:  # the start snapshot: running
        collector.wait_for(lambda e, uuid=uuid: e.instance_uuid == uuid)

    # About 0.6 ms a call. The broker stops after 600 calls, starts again after 600
    # more, and the burst goes on for 600 calls once the broker is back.
    burst = Burst(domains, calls=10**6, pace=0.0003)
    started = time.monotonic()
    burst.start()
    try:
        burst.wait_count(600)
        calls = {"stop_app": burst.count}
        with broker_stopped():
            calls["stopped"] = burst.count
            burst.wait_count(calls["stopped"] + 600)
            calls["start_app"] = burst.count
        back = time.monotonic()
        calls["started"] = burst.count
        burst.calls = max(3000, burst.count + 600)
    finally:
        burst.calls = min(burst.calls, burst.count + 600)
        burst.finish()
    burst_seconds = time.monotonic() - started

    def all_received() -> bool:
        return all(len(collector.of(u, resync=False)) >= len(burst.expected[u]) for u in uuids)

    wait_until(all_received, what="every burst event received")
    drained = time.monotonic() - back
    sentinel_received(make_domain, collector)

    for uuid in uuids:
        assert [e.transition for e in collector.of(uuid, resync=False)] == burst.expected[uuid]
        assert [e.power_state for e in collector.of(uuid, resync=False)] == [
            AFTER[t] for t in burst.expected[uuid]
        ]
        assert collector.of(uuid, resync=False)[-1].power_state is real_power_state(
            domains[uuids.index(uuid)]
        )
    assert_seq_increasing(collector, uuids)
    assert_no_duplicate_delivered(collector)

    sample: dict[str, float] = {}

    def settled() -> bool:
        # Once nothing waits, every message sent was either confirmed or sent again.
        sample.update(metrics(port))
        return sample["hypervisor_notifier_outbox_depth"] == 0 and (
            sample["hypervisor_notifier_events_published_total"]
            == sample["hypervisor_notifier_events_confirmed_total"]
            + sample["hypervisor_notifier_events_failed_total"]
        )

    wait_until(settled, what=lambda: f"published == confirmed + failed: {sample}")
    resent = sample["hypervisor_notifier_events_failed_total"]
    generated = sum(len(calls) for calls in burst.expected.values())
    received = sum(len(collector.of(u, resync=False)) for u in uuids)
    print(
        f"\nbroker outage: {generated} events generated in {burst_seconds:.1f} s "
        f"(calls made at each step: {calls}); {received} received; "
        f"{subscriber.stats.duplicates} duplicates filtered, {subscriber.stats.stale} stale; "
        f"{resent:.0f} publisher resends (events_failed_total), "
        f"{sample['hypervisor_notifier_events_published_total']:.0f} published, "
        f"{sample['hypervisor_notifier_events_confirmed_total']:.0f} confirmed; "
        f"drained {drained:.2f} s after start_app"
    )
    assert generated == burst.calls >= 3000
    assert received == generated
    assert subscriber.stats.stale == 0
    # The publisher did see the outage.
    assert "lost broker" in service.log or "cannot publish" in service.log, service.log
    assert wait_for_health(port, 200)["problems"] == []


# -- 2. service crash ----------------------------------------------------------


def outbox_event_ids(path: Path) -> list[str]:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT body FROM events ORDER BY id").fetchall()
    finally:
        db.close()
    return [wire.decode(body).event_id for (body,) in rows]


def resync_lines(service) -> str:
    return "".join(line for line in service.lines if "resync (" in line)


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


# -- 3. unusable outbox ----------------------------------------------------------

OUTBOX_PROBLEM = "is not usable"


def test_outbox_in_an_uncreatable_directory_degrades_to_memory_and_says_so(
    make_domain, start_service, subscribe
):
    path = "/etc/hostname/outbox.sqlite"  # under a regular file: never a directory
    assert Path("/etc/hostname").is_file()
    dom = make_domain()
    _, collector = subscribe()
    service = start_service(outbox={"path": path})
    port = service.health_port
    collector.wait_for(lambda e: e.instance_uuid == dom.UUIDString())  # the snapshot
    dom.create()
    dom.suspend()
    collector.wait_for(
        lambda e: e.instance_uuid == dom.UUIDString() and e.transition is Transition.PAUSED
    )
    assert [e.transition for e in collector.of(dom.UUIDString(), resync=False)] == [
        Transition.STARTED,
        Transition.PAUSED,
    ]

    errors = [line for line in service.lines if " ERROR " in line]
    assert len(errors) == 1, service.log
    assert path in errors[0] and "in memory" in errors[0], errors[0]
    status, body = healthz(port)
    assert status == 503, body
    assert any("outbox" in problem and path in problem for problem in body["problems"]), body
    sample = metrics(port)
    assert sample["hypervisor_notifier_outbox_durable"] == 0.0
    print(f"\nuncreatable outbox: error logged: {errors[0].strip()}\n  /healthz {status} {body}")
    # Not durable and nothing left: a clean stop is still a success.
    assert service.stop() == 0, service.log


@contextlib.contextmanager
def tmpfs(directory: Path, size: str) -> Iterator[Path]:
    directory.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(directory)],
        check=True,
        timeout=10,
    )
    try:
        yield directory
    finally:
        if subprocess.run(["umount", str(directory)], check=False, timeout=10).returncode:
            subprocess.run(["umount", "-l", str(directory)], check=True, timeout=10)


def fill(directory: Path) -> int:
    """Write a file until the filesystem is full; return its size."""
    result = subprocess.run(
        ["dd", "if=/dev/zero", f"of={directory / 'filler'}", "bs=4096"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert "No space left on device" in result.stderr, result.stderr
    return (directory / "filler").stat().st_size


def file_sizes(directory: Path) -> dict[str, int]:
    return {path.name: path.stat().st_size for path in sorted(directory.iterdir())}


#: Big enough for a start's resync of thousands of other processes' nova guests
#: (the shared test driver may hold them: a listing benchmark defines 5,000).
OUTBOX_FS_SIZE = "16m"


def start_with_fresh_wal(start_service, collector, uuids, outbox_path: Path, **options):
    """Start the service on ``outbox_path`` so that its WAL is empty, and healthy.

    A first service records the states (its start resync may write megabytes if
    the shared driver holds many guests; past 1,000 pages SQLite checkpoints and
    then reuses its WAL, needing no new space: a full disk would go unnoticed).
    Stopped, it leaves no WAL; the second publishes no change at start, so its
    WAL grows from nothing with the next events.
    """
    first = start_service(outbox={"path": str(outbox_path)}, **options)
    for uuid in uuids:
        collector.wait_for(lambda e, uuid=uuid: e.instance_uuid == uuid)
    assert first.stop() == 0, first.log
    service = start_service(outbox={"path": str(outbox_path)}, **options)
    service.wait_for_log("resync (connected):")
    port = service.health_port
    wait_for_health(port, 200)
    return service, port


def test_disk_full_under_the_outbox_degrades_to_memory_and_says_so(
    tmp_path, make_domain, start_service, subscribe
):
    domains = running_domains(make_domain, 2)
    uuids = [d.UUIDString() for d in domains]
    _, collector = subscribe()
    with tmpfs(tmp_path / "small", OUTBOX_FS_SIZE) as small:
        outbox_path = small / "outbox.sqlite"
        service, port = start_with_fresh_wal(start_service, collector, uuids, outbox_path)
        try:
            files_before = file_sizes(small)
            filler = fill(small)

            # Events after the disk filled up: every one must still arrive.
            burst = Burst(domains, calls=200)
            burst.start()
            burst.finish()
            sentinel_received(make_domain, collector)
            for uuid in uuids:
                assert [e.transition for e in collector.of(uuid, resync=False)] == (
                    burst.expected[uuid]
                )
            status, body = healthz(port)
            durable = metrics(port)["hypervisor_notifier_outbox_durable"]
            files_after = file_sizes(small)
            errors = [line.strip() for line in service.lines if " ERROR " in line]
            print(
                f"\ndisk full: {filler} bytes of filler; outbox files before {files_before}, "
                f"after {files_after}; {burst.calls} events after the disk filled, all "
                f"received; /healthz {status} {body}; outbox_durable {durable}; "
                f"errors logged: {errors}"
            )
            assert status == 503, body
            assert any("outbox" in p and OUTBOX_PROBLEM in p for p in body["problems"]), body
            assert durable == 0.0
            # One error, from the outbox: the publisher goes on undisturbed.
            outbox_errors = [line for line in errors if "hypervisor_notifier.outbox" in line]
            assert len(outbox_errors) == 1, service.log
            assert "disk is full" in outbox_errors[0]
        finally:
            service.stop()
        # The abandoned file was moved aside: a next start neither republishes its
        # entries (confirmed since) nor trusts its states (they stopped following).
        assert not outbox_path.exists()
        assert outbox_path.with_name(outbox_path.name + ".unusable").exists()


class HoldingProxy:
    """A TCP proxy to the broker that can hold what the broker sends (its acks).

    Arguments:
        target: ``(host, port)`` of the broker.
    """

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.holding = threading.Event()
        self._closing = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def hold(self) -> None:
        """Keep what the broker sends from now on, until :meth:`release`."""
        self.holding.set()

    def release(self) -> None:
        self.holding.clear()

    def close(self) -> None:
        self._closing.set()
        self.listener.close()

    def _accept(self) -> None:
        while not self._closing.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()

    def _pump(self, client: socket.socket, upstream: socket.socket) -> None:
        held = bytearray()
        with client, upstream, selectors.DefaultSelector() as selector:
            selector.register(client, selectors.EVENT_READ)
            selector.register(upstream, selectors.EVENT_READ)
            while not self._closing.is_set():
                if held and not self.holding.is_set():
                    client.sendall(held)
                    held.clear()
                for key, _ in selector.select(0.02):
                    try:
                        data = key.fileobj.recv(65536)
                    except OSError:
                        return
                    if not data:
                        return
                    if key.fileobj is client:
                        upstream.sendall(data)
                    elif self.holding.is_set() or held:
                        held += data
                    else:
                        client.sendall(data)


def test_disk_full_found_by_a_confirm_degrades_the_outbox_quietly(
    tmp_path, make_domain, start_service, subscribe
):
    (dom,) = running_domains(make_domain, 1)
    _, collector = subscribe()
    proxy = HoldingProxy(("127.0.0.1", 5672))
    options = {
        "transport_url": f"rabbit://guest:guest@127.0.0.1:{proxy.port}/",
        # One message in flight: the publisher waits for its ack and nothing else.
        "publisher": {"confirm_window": "1"},
    }
    try:
        with tmpfs(tmp_path / "small", OUTBOX_FS_SIZE) as small:
            with precondition("a healthy service with a durable outbox"):
                service, port = start_with_fresh_wal(
                    start_service,
                    collector,
                    [dom.UUIDString()],
                    small / "outbox.sqlite",
                    **options,
                )
            try:
                with precondition("events put, uncommitted, on a full disk, acks held"):
                    proxy.hold()
                    dom.suspend()  # published; its ack is held
                    dom.resume()  # committed by the publisher's next flush; then the
                    time.sleep(0.5)  # publisher, its window full, waits for the ack only
                    fill(small)
                    dom.suspend()  # put, not committed: nothing flushes until the ack
                    time.sleep(0.2)
                    proxy.release()  # the ack: confirm() commits, on a full disk
                    sentinel_received(make_domain, collector)
                    assert [
                        e.transition for e in collector.of(dom.UUIDString(), resync=False)
                    ] == [
                        Transition.PAUSED,
                        Transition.RESUMED,
                        Transition.PAUSED,
                    ]
                    status, body = healthz(port)
                    assert status == 503 and OUTBOX_PROBLEM in str(body), body
                errors = [line.strip() for line in service.lines if " ERROR " in line]
                print(f"\ndisk full found by a confirm: errors logged: {errors}")
                # One error, the outbox's; the publisher goes on undisturbed.
                assert len(errors) == 1 and OUTBOX_PROBLEM in errors[0], service.log
                assert "publisher failed" not in service.log, service.log
            finally:
                service.stop()
    finally:
        proxy.close()


def test_restart_after_a_degraded_outbox_publishes_what_the_subscriber_missed(
    tmp_path, make_domain, start_service, subscribe
):
    trigger, dom = running_domains(make_domain, 2)
    _, collector = subscribe()

    def last_state() -> PowerState:
        return collector.of(dom.UUIDString())[-1].power_state

    with tmpfs(tmp_path / "small", OUTBOX_FS_SIZE) as small:
        outbox_path = small / "outbox.sqlite"
        with precondition("a healthy service with a durable outbox"):
            service, port = start_with_fresh_wal(
                start_service, collector, [trigger.UUIDString(), dom.UUIDString()], outbox_path
            )
        try:
            with precondition("the outbox degrades when the disk is full"):
                fill(small)
                trigger.suspend()  # its commit fails: the outbox goes on in memory
                wait_for_health(port, 503)
                assert metrics(port)["hypervisor_notifier_outbox_durable"] == 0.0
            with precondition("a change while degraded reaches the subscriber"):
                dom.suspend()  # published from memory: the file still says RUNNING
                sentinel_received(make_domain, collector)
                assert last_state() is PowerState.PAUSED
        finally:
            with precondition("a clean stop, every event confirmed"):
                assert service.stop() == 0, service.log
        (small / "filler").unlink()  # the operator frees the disk ...
        dom.resume()  # ... and meanwhile, with no service running, the guest resumes
        restarted = start_service(outbox={"path": str(outbox_path)})
        try:
            with precondition("a restart on the freed disk"):
                restarted.wait_for_log("resync (connected):")
                sentinel_received(make_domain, collector)
            print(
                f"\nrestart after a degraded outbox: the subscriber holds {last_state().name}, "
                f"the guest is {real_power_state(dom).name}; {resync_lines(restarted).strip()}"
            )
            # The guest runs; the subscriber must not be left believing it paused.
            assert last_state() is real_power_state(dom) is PowerState.RUNNING
        finally:
            restarted.stop()  # before the filesystem is unmounted


# -- 4. health ------------------------------------------------------------------


def test_health_ok_and_metrics_when_all_is_well(make_domain, start_service, subscribe):
    dom = make_domain()
    dom.create()
    _, collector = subscribe()
    service = start_service()
    port = service.health_port
    collector.wait_for(lambda e: e.instance_uuid == dom.UUIDString())
    dom.suspend()
    collector.wait_for(lambda e: e.instance_uuid == dom.UUIDString() and not e.resync)
    body = wait_for_health(port, 200)
    assert body == {"status": "ok", "problems": []}

    status, text = http_get(port, "/metrics")
    assert status == 200
    # CounterMetricFamily("..._events_received") is exposed with the _total suffix.
    resync = re.search(
        r'^hypervisor_notifier_events_received_total\{kind="resync"\} (\S+)$', text, re.M
    )
    pushed = re.search(
        r'^hypervisor_notifier_events_received_total\{kind="pushed"\} (\S+)$', text, re.M
    )
    assert resync and float(resync.group(1)) >= 1, text
    assert pushed and float(pushed.group(1)) >= 1, text
    assert "# TYPE hypervisor_notifier_publish_latency_seconds histogram" in text
    sample = metrics(port)
    for name in ("published", "confirmed", "failed", "coalesced"):
        assert f"hypervisor_notifier_events_{name}_total" in sample, name
    assert sample["hypervisor_notifier_outbox_durable"] == 1.0
    assert sample["hypervisor_notifier_broker_connected"] == 1.0
    assert sample["hypervisor_notifier_hypervisor_connected"] == 1.0

    def settled() -> bool:
        # Outbox empty, and one latency observation per confirm (the confirm
        # counter is incremented just before the observations: polled).
        sample.update(metrics(port))
        return sample["hypervisor_notifier_outbox_depth"] == 0 and (
            sample["hypervisor_notifier_publish_latency_seconds_count"]
            == sample["hypervisor_notifier_events_confirmed_total"]
        )

    wait_until(settled, what=lambda: f"outbox empty, one observation per confirm: {sample}")
    confirmed = sample["hypervisor_notifier_events_confirmed_total"]
    count = sample["hypervisor_notifier_publish_latency_seconds_count"]
    assert count == confirmed >= 2
    assert sample['hypervisor_notifier_publish_latency_seconds_bucket{le="+Inf"}'] == count
    assert sample["hypervisor_notifier_publish_latency_seconds_sum"] > 0
    print(
        f"\nhealth ok: /healthz 200 {body}; events_received_total: {resync.group(1)} resync, "
        f"{pushed.group(1)} pushed; {confirmed:.0f} confirmed, latency histogram count "
        f"{count:.0f}, sum {sample['hypervisor_notifier_publish_latency_seconds_sum']:.4f} s"
    )


def test_health_reports_a_refusing_broker_without_the_password(start_service):
    password = "Sekr1t-pw-4711"
    service = start_service(
        transport_url=f"rabbit://hn-no-such-user:{password}@127.0.0.1:5672/",
        # Nothing can be confirmed: do not wait 10 s for it at the stop.
        DEFAULT={"shutdown_timeout": "1"},
    )
    port = service.health_port
    wait_until(
        lambda: any("ACCESS_REFUSED" in p for p in healthz(port)[1]["problems"]),
        what="ACCESS_REFUSED in /healthz",
    )
    status, body = healthz(port)
    refused = [p for p in body["problems"] if "ACCESS_REFUSED" in p]
    print(f"\nrefusing broker: /healthz {status} {body}")
    assert status == 503
    assert body["status"] == "unhealthy"
    assert len(refused) == 1
    assert "hn-no-such-user@127.0.0.1:5672" in refused[0]
    assert password not in json.dumps(body)
    assert password not in service.log
    sample = metrics(port)
    assert sample["hypervisor_notifier_broker_connected"] == 0.0
