"""The ESX backend against govmomi's vSphere API simulator: event latency, and resync cost.

Usage: ``python benchmarks/esx.py [--events N] [--vms N] [--repeats N]`` (or ``tox -e bench``).

A benchmark, not a test: it prints figures for two measurements, one after
the other in the same run, each on a simulator of its own
(``tests/functional/vcsim.py``: the project's build of govmomi's simulator,
``-esx -vms N``, HTTPS with its certificate verified):

1. **Latency from a task's completion to the subscriber's callback.** A
   simulator with 10 VMs; the real service (``python -m
   hypervisor_notifier.cmd.notifier``, ``backend = esx``, a unique host and
   exchange) and a :class:`hypervisor_notifier.consumer.Subscriber` on its
   per-host queue, in this process. A pyVmomi session of this process
   alternates ``PowerOffVM_Task`` and ``PowerOnVM_Task`` on one VM. The
   simulator runs a task before it answers the call, so the call returning is
   the task's completion: ``time.monotonic()`` right after it returns, and
   again first thing in the callback. The next call is made only once the
   previous event arrived (latency, not throughput); each event's transition
   is checked against its call. N events (default 100), after
   :data:`WARMUP` uncounted ones, twice:

   - *back to back*: the next call right after the previous callback;
   - *random phase*: a pause drawn uniformly from [0, 250) ms first.

   Why the two differ: govmomi's ``WaitForUpdatesEx`` (simulator
   ``property_collector.go``) starts a 250 ms ticker when the call arrives and
   looks at the changes collected only when it ticks. The backend calls again
   as soon as the previous batch is handled, so a change waits ``250 - (its
   time since the call started) mod 250`` ms. Back to back, a task completes
   a few ms after the service called again: nearly the whole 250 ms. At a
   random phase, 0-250 ms uniformly: what independent tasks would see. The
   ticker is the simulator's: it says nothing of a real vCenter's delay.

   Each event is also split at ``occurred_at``, which the backend stamps
   (``events.utcnow()``) when it handles the ``WaitForUpdatesEx`` answer:
   *simulator* = call return -> ``occurred_at`` (the ticker, the answer, its
   parsing in the service); *ours* = ``occurred_at`` -> callback (the
   service's outbox and publisher, the broker, the subscriber). Both are
   wall-clock (``time.time()``; ``occurred_at`` is UTC wall clock, to the
   microsecond on the wire), one clock for both processes on one machine.

2. **Resync of many VMs** (default 1,000): a simulator with that many VMs
   (its start-up time printed), and an :class:`EsxBackend` in this process,
   logged in with ``_login()`` and watching with ``_watch()`` (its view, event
   collector and filter) as the service's would be. Median of ``--repeats``
   runs of:

   - *the backend's*: ``list_instances()``, one ``RetrievePropertiesEx`` over
     the container view for ``name``, ``config.instanceUuid`` and
     ``runtime.powerState`` (after one untimed run);
   - *naive*: ``view.view``, then ``vm.name``, ``vm.config.instanceUuid``
     and ``vm.runtime.powerState`` for each VM, as pyVmomi attribute reads,
     on the same session and view. Each attribute of a managed object is a
     ``Fetch`` call of its own, and ``vm.config`` fetches the whole
     ``VirtualMachineConfigInfo`` (devices and all) for one field.

   Both must list the same (uuid, name, power state) rows (checked).
   RPCs: every SOAP request goes through the session stub's ``InvokeMethod``
   (pyVmomi's property accessors too), one HTTP round trip each; a wrapper
   on it counts them, by method and property, with their time. It stays on
   while timing: one Python call per RPC, negligible against an HTTPS round
   trip.

Clean-up, in ``finally`` blocks: the service gets SIGTERM (its exit status is
printed), the subscriber stops, its exchange and queue are deleted, pyVmomi
sessions log out, the simulators are stopped.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import os
import queue
import random
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from esx_resync import measure_resync, report_resync
from esx_sim import session, simulator, vcsim
from harness import (
    TRANSPORT_URL,
    Stats,
    delete_broker_objects,
    machine_line,
    progress,
    rabbitmq_version,
    running,
    service_argv,
    tail,
    versions,
    write_conf,
)

from hypervisor_notifier import wire
from hypervisor_notifier.consumer import LifecycleEvent, Subscriber
from hypervisor_notifier.events import Transition

TOPIC = "hypervisor_events"
LATENCY_VMS = 10
BENCH_VM = "ha-host_VM0"  # the simulator's first VM with -esx
WARMUP = 4
EVENT_TIMEOUT = 5.0
MAX_MISSING = 5
READY_TIMEOUT = 30.0
#: The simulator's WaitForUpdatesEx ticker (govmomi simulator/property_collector.go).
TICKER_MS = 250.0

DEFAULT_EVENTS = 100
DEFAULT_VMS = 1000
DEFAULT_REPEATS = 5


# -- 1. latency -------------------------------------------------------------------


@dataclasses.dataclass
class Series:
    """What one pacing measured, per counted event (milliseconds)."""

    label: str
    total: list[float] = dataclasses.field(default_factory=list)
    simulator: list[float] = dataclasses.field(default_factory=list)
    ours: list[float] = dataclasses.field(default_factory=list)
    mismatched: int = 0
    missing: int = 0
    late: int = 0


Received = tuple[float, float, LifecycleEvent]


class PowerCycler:
    """Alternate PowerOffVM_Task and PowerOnVM_Task on one VM; match each with its event."""

    def __init__(self, vm: Any, inbox: queue.SimpleQueue[Received]) -> None:
        self.vm = vm
        self.inbox = inbox
        self.powered_on = True  # every simulator VM starts powered on

    def measure(self, series: Series, count: int, pause: Callable[[], float]) -> Series:
        for index in range(WARMUP + count):
            while not self.inbox.empty():  # an event that came after its timeout
                self.inbox.get_nowait()
                series.late += 1
            time.sleep(pause())
            if self.powered_on:
                self.vm.PowerOffVM_Task()
                expected = Transition.STOPPED
            else:
                self.vm.PowerOnVM_Task()
                expected = Transition.STARTED
            completed, completed_wall = time.monotonic(), time.time()
            self.powered_on = not self.powered_on
            try:
                received, received_wall, event = self.inbox.get(timeout=EVENT_TIMEOUT)
            except queue.Empty:
                series.missing += 1
                if series.missing > MAX_MISSING:
                    raise RuntimeError(f"more than {MAX_MISSING} events missing") from None
                continue
            if index < WARMUP:
                continue
            if event.transition is not expected:
                series.mismatched += 1
                continue
            occurred = event.occurred_at.timestamp()
            series.total.append((received - completed) * 1000)
            series.simulator.append((occurred - completed_wall) * 1000)
            series.ours.append((received_wall - occurred) * 1000)
        return series


def write_service_conf(path: Path, *, host: str, exchange: str, esx: dict[str, str]) -> str:
    return write_conf(
        path,
        {
            "DEFAULT": {"host": host, "backend": "esx"},
            "esx": esx,
            "publisher": {"transport_url": TRANSPORT_URL, "exchange": exchange, "topic": TOPIC},
            "outbox": {"path": path.with_suffix(".sqlite")},
            "health": {"port": 0},
        },
    )


@dataclasses.dataclass
class Latency:
    """The latency part's figures."""

    started_s: float
    series: list[Series]
    service_exit: int | None = None
    #: What the subscriber logged at WARNING or above (a broker restart, ...).
    warnings: list[str] = dataclasses.field(default_factory=list)


class Warnings(logging.Handler):
    """Keep the subscriber's warnings: they say when a figure is not the path's own."""

    def __init__(self, into: list[str]) -> None:
        super().__init__(logging.WARNING)
        self.into = into

    def emit(self, record: logging.LogRecord) -> None:
        self.into.append(record.getMessage())


@contextlib.contextmanager
def logged_warnings(logger: str) -> Iterator[list[str]]:
    """The messages ``logger`` logs at WARNING or above during the block."""
    messages: list[str] = []
    handler = Warnings(messages)
    logging.getLogger(logger).addHandler(handler)
    try:
        yield messages
    finally:
        logging.getLogger(logger).removeHandler(handler)


@contextlib.contextmanager
def watched_by_service(
    sim: Any, instance_uuid: str, workdir: Path, figures: Latency
) -> Iterator[queue.SimpleQueue[Received]]:
    """The service on ``sim`` and a Subscriber here, ready; the VM's pushed events, stamped.

    After the block: the service SIGTERMed (its exit status in ``figures``),
    the subscriber stopped, the exchange and the host queue deleted.
    """
    run_id = uuid.uuid4().hex[:8]
    host, exchange = f"bench-esx-{run_id}", f"bench_esx_{run_id}"
    inbox: queue.SimpleQueue[Received] = queue.SimpleQueue()
    resynced = threading.Event()

    def on_event(event: LifecycleEvent) -> None:
        received, received_wall = time.monotonic(), time.time()
        if event.instance_uuid != instance_uuid:
            return
        if event.resync:
            resynced.set()  # the service's start-up resync: its filter is in place
        else:
            inbox.put((received, received_wall, event))

    subscriber = Subscriber(TRANSPORT_URL, on_event, host=host, exchange=exchange, topic=TOPIC)
    service: subprocess.Popen[str] | None = None
    try:
        subscriber.start()
        if not subscriber.wait_ready(READY_TIMEOUT):
            raise RuntimeError("the Subscriber did not get ready")
        conf = write_service_conf(
            workdir / "notifier.conf", host=host, exchange=exchange, esx=sim.config()
        )
        argv = service_argv(conf)
        log_path = workdir / "notifier.log"
        with running("hypervisor-notifier service (esx)", argv, log_path) as service:
            if not resynced.wait(READY_TIMEOUT):
                raise RuntimeError(f"no resync from the service:\n{tail(log_path)}")
            yield inbox
    finally:
        if service is not None:
            figures.service_exit = service.returncode
        subscriber.stop()
        delete_broker_objects(exchanges=[exchange], queues=[wire.host_queue_name(TOPIC, host)])


def measure_latency(binary: str, workdir: Path, count: int) -> Latency:
    pacings: list[tuple[str, Callable[[], float]]] = [
        ("back to back", lambda: 0.0),
        (
            f"random phase (pause U[0, {TICKER_MS:g}) ms first)",
            lambda: random.uniform(0, TICKER_MS / 1000),
        ),
    ]
    with (
        simulator(binary, workdir / "latency", LATENCY_VMS) as (sim, started_s),
        logged_warnings("hypervisor_notifier.consumer") as warnings,
        session(sim) as si,
    ):
        progress(f"latency: simulator with {LATENCY_VMS} VMs started in {started_s:.2f} s")
        figures = Latency(started_s, [], warnings=warnings)
        vm = sim.vms_by_name(si)[BENCH_VM]
        with watched_by_service(sim, vm.config.instanceUuid, workdir, figures) as inbox:
            cycler = PowerCycler(vm, inbox)
            for label, pause in pacings:
                progress(f"latency, {label}: {WARMUP} + {count} events")
                figures.series.append(cycler.measure(Series(label), count, pause))
    return figures


# -- report -----------------------------------------------------------------------


def machine(binary: str) -> list[str]:
    govmomi = subprocess.run(
        ["dpkg-query", "-W", "-f=${Version}", "golang-github-vmware-govmomi-dev"],
        capture_output=True, text=True, check=False,
    ).stdout or "?"  # fmt: skip
    return [
        machine_line(),
        f"{versions('pyvmomi', 'kombu')}; simulator: govmomi {govmomi} (Debian), "
        f"{Path(binary).name}; RabbitMQ {rabbitmq_version()}",
    ]


def report_latency(figures: Latency, count: int) -> list[str]:
    lines = [
        f"1. latency, task completion (PowerOffVM_Task/PowerOnVM_Task returned) -> Subscriber "
        f"callback; {LATENCY_VMS}-VM simulator (started in {figures.started_s:.2f} s), "
        f"N={count} per pacing",
        f"  {'pacing / part (ms)':<44}{'p50':>8}{'p90':>8}{'p99':>8}{'max':>8}{'min':>8}",
    ]
    for series in figures.series:
        lines += [
            f"  {series.label}: {len(series.total)} matched, {series.mismatched} mismatched, "
            f"{series.missing} missing, {series.late} late (+{WARMUP} warm-up events)",
            Stats.of(series.total).row("  total (monotonic)"),
            Stats.of(series.simulator).row("  simulator: call return -> occurred_at"),
            Stats.of(series.ours).row("  ours: occurred_at -> callback"),
        ]
    for message in figures.warnings:
        lines.append(f"  WARNING: the subscriber logged: {message}")
    lines.append(
        f"  (the simulator answers WaitForUpdatesEx on a {TICKER_MS:g} ms ticker started by each"
        " call: back to back, a change waits for nearly all of it; at a random phase, U[0, 250))"
    )
    return lines


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--events", type=int, default=DEFAULT_EVENTS, help="events per pacing (default 100)"
    )
    parser.add_argument(
        "--vms", type=int, default=DEFAULT_VMS, help="VMs for the resync (default 1000)"
    )
    parser.add_argument(
        "--repeats", type=int, default=DEFAULT_REPEATS, help="runs per median (default 5)"
    )
    args = parser.parse_args(argv)
    if min(args.events, args.vms, args.repeats) < 1:
        parser.error("--events, --vms and --repeats must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    binary = vcsim.build()
    lines = machine(binary)
    with tempfile.TemporaryDirectory(prefix="hn-bench-esx-") as directory:
        workdir = Path(directory)
        latency = measure_latency(binary, workdir, args.events)
        lines += report_latency(latency, args.events)
        lines += report_resync(
            measure_resync(binary, workdir, args.vms, args.repeats), args.repeats
        )
    load = " ".join(f"{value:.2f}" for value in os.getloadavg())
    lines.append(
        f"cleanup: service SIGTERM -> exit {latency.service_exit}; simulators stopped; exchange "
        f"and queue deleted. Whole run {time.perf_counter() - started:.1f} s; load average {load}"
    )
    print("\n".join(lines))
    return 0 if latency.service_exit == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
