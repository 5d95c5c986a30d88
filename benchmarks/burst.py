"""The burst window: events a crash would lose just after a burst, group commit beside one by one.

Usage: ``python benchmarks/burst.py [--changes 5000] [--guests 50] [--rounds 2]
[--paths group,one-by-one] [--rate CALLS_PER_S]`` (or ``tox -e bench``).

A benchmark, not a test. In this process, the service's real pipeline:
:class:`LibvirtBackend` watching the test driver of a libvirtd of the
benchmark's own (``tests/functional/privatelibvirtd.py``: other processes'
guests neither add events nor see the burst's; ``--uri test+unix:///default``
for the shared daemon),
:class:`Service`, a :class:`SQLiteOutbox` file in a temporary directory and
the :class:`Publisher` to the RabbitMQ at 127.0.0.1:5672 (its own exchange and
host queue, deleted after). A driver child process (this script with
``--drive``) makes ``--changes`` libvirt calls as fast as libvirtd takes them,
suspending and resuming ``--guests`` guests of its own in turn, one call
after the other, and prints the ``time.monotonic()`` of its last
call's return (one clock for every process on Linux). With ``--rate`` it
paces its calls to that many a second (a burst's rate set, not found: the
same load for every path and every version of the code). Then, per path:

- **in memory 0.2 s after the burst**: the events of the burst that the
  libvirt callbacks had received but the outbox had not committed at that
  instant (what a SIGKILL then would lose: the resync repairs final states,
  not transitions). Those not yet received by a callback are shown apart.
- **callback -> commit** p50/p99: from the callback's stamp
  (``occurred_at``, taken in the callback) to the return of the
  ``put_many`` that committed the event.

The paths, in the same run, alternating in rounds (A B B A ...) so a drift
of the machine's load weighs on both alike:

1. **group**: the service as it runs: the dispatch thread reports every
   event waiting at once (``on_events``), committed in one transaction.
2. **one-by-one**: the previous path: the same backend, but each event is
   handed to the service alone (``on_events([event])``), one commit each,
   behind each other.

Goal (group path): at most 1 % of the burst in memory 0.2 s after it, and
a callback -> commit p99 under 5 ms.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import queue
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import libvirt
from harness import (
    TRANSPORT_URL,
    FullPasses,
    Stats,
    delete_broker_objects,
    progress,
    rabbitmq_version,
)
from oslo_config import cfg

from hypervisor_notifier import conf as config
from hypervisor_notifier import events, wire
from hypervisor_notifier.backends.base import BackendListener
from hypervisor_notifier.backends.libvirt.backend import DomainEvent, LibvirtBackend
from hypervisor_notifier.notifier import startup_objects
from hypervisor_notifier.notifier.outbox_sqlite import SQLiteOutbox
from hypervisor_notifier.notifier.service import Service

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from tests.functional.privatelibvirtd import PrivateLibvirtd  # noqa: E402

TOPIC = "hypervisor_events"
GUEST_XML = (
    "<domain type='test'><name>{name}</name><memory>8192</memory>"
    "<os><type>hvm</type></os><metadata>"
    "<nova:instance xmlns:nova='http://openstack.org/xmlns/libvirt/nova/1.1'/>"
    "</metadata></domain>"
)
AFTER = 0.2
GOAL_IN_MEMORY = 0.01
GOAL_P99_MS = 5.0
ANCHOR = "anchor: one commit per event, 15-56 % of the burst in memory 0.2 s after it"
TIMEOUT = 120.0


# -- the driver child process --------------------------------------------------


def drive(uri: str, names: list[str], changes: int, rate: float) -> None:
    """Suspend/resume ``names`` in turn, ``changes`` calls in all (``rate`` a second at most,
    0: as fast as libvirtd takes them); print the start's and end's monotonic."""
    conn = libvirt.open(uri)
    doms = [conn.lookupByName(name) for name in names]
    paused = [dom.state()[0] == libvirt.VIR_DOMAIN_PAUSED for dom in doms]
    started = time.monotonic()
    for call in range(changes):
        # Ahead of the pace by a millisecond or more: wait (a shorter sleep overshoots).
        if rate and (ahead := started + call / rate - time.monotonic()) > 0.001:
            time.sleep(ahead)
        i = call % len(doms)
        (doms[i].resume if paused[i] else doms[i].suspend)()
        paused[i] = not paused[i]
    print(json.dumps({"started": started, "finished": time.monotonic()}), flush=True)
    sys.stdin.read()  # the parent closes it once it read the line
    conn.close()


# -- instruments -----------------------------------------------------------------


class Counts:
    """What the callbacks received and the outbox committed, of the burst's guests."""

    def __init__(self, uuids: set[str]) -> None:
        self.uuids = uuids
        self.received = 0
        self.committed = 0
        self.latencies_ms: list[float] = []


class CountingQueue(queue.SimpleQueue):
    """A dispatch queue counting the burst's events the callbacks hand to it.

    It reads the UUID the callback already read: counting adds no libvirt
    call (each lets the other threads take the interpreter) to the callback.
    """

    counts: Counts

    def put(self, item: object, block: bool = True, timeout: float | None = None) -> None:
        super().put(item, block, timeout)
        if isinstance(item, DomainEvent) and item.uuid in self.counts.uuids:
            self.counts.received += 1


class CountingBackend(LibvirtBackend):
    """The libvirt backend, counting the burst's events its callbacks receive."""

    def count(self, counts: Counts) -> None:
        """Count the burst's events from now on (before the backend connects)."""
        self._queue = CountingQueue()
        self._queue.counts = counts


class TimedOutbox(SQLiteOutbox):
    """The SQLite outbox, noting when each of the burst's events was committed."""

    counts: Counts

    def put_many(self, batch: list[wire.WireEvent]) -> None:
        super().put_many(batch)
        committed = time.time()
        # The burst's guests' pushed events (not the host's connected, not resyncs).
        ours = [e for e in batch if e.subject in self.counts.uuids and not getattr(e, "resync", 1)]
        self.counts.committed += len(ours)
        self.counts.latencies_ms += [(committed - e.occurred_at.timestamp()) * 1000 for e in ours]


class OneByOne:
    """The previous path: each event handed to the service alone, one commit each.

    Arguments:
        service: The service events are handed to.

    """

    def __init__(self, service: Service) -> None:
        self.service = service

    def on_events(self, observations: list[events.Observation]) -> None:
        for observation in observations:
            self.service.on_events([observation])

    def on_resync(self, reason: str) -> None:
        self.service.on_resync(reason)

    def on_disconnected(self, reason: str) -> None:
        self.service.on_disconnected(reason)


# -- one path ------------------------------------------------------------------


@contextlib.contextmanager
def service_running(
    uri: str, workdir: Path, counts: Counts, one_by_one: bool
) -> Iterator[Service]:
    """The real pipeline in this process, its start-up resync done; stopped and cleaned after."""
    host, exchange = f"burst-{uuid.uuid4().hex[:8]}", f"hn-burst-{uuid.uuid4().hex[:8]}"
    conf = cfg.ConfigOpts()
    config.register_opts(conf)
    conf([], default_config_files=[], default_config_dirs=[])
    conf.set_override("host", host)
    conf.set_override("connection_uri", uri, group="libvirt")
    conf.set_override("transport_url", TRANSPORT_URL, group="publisher")
    conf.set_override("exchange", exchange, group="publisher")
    backend = CountingBackend(conf)
    outbox = TimedOutbox(str(workdir / f"{host}.sqlite"))
    backend.count(counts)
    outbox.counts = counts
    service = Service.from_conf(conf, backend, outbox)
    listener: BackendListener = OneByOne(service) if one_by_one else service
    startup_objects.freeze()  # as the service's main does before its threads start
    service.publisher.start()
    backend.connect(listener)
    try:
        wait_until(lambda: service.received["resync"] >= len(counts.uuids), "start-up resync")
        yield service
    finally:
        service.stop()
        outbox.close()
        delete_broker_objects(exchanges=[exchange], queues=[wire.host_queue_name(TOPIC, host)])


def wait_until(condition: object, what: str) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not done in {TIMEOUT:g} s")
        time.sleep(0.01)


def burst(
    uri: str,
    workdir: Path,
    names: list[str],
    uuids: set[str],
    changes: int,
    one: bool,
    rate: float,
):
    """One burst on one path.

    Returns (in memory, not yet received, latencies, calls/s, full collection
    passes' ms, lateness).
    """
    counts = Counts(uuids)
    with service_running(uri, workdir, counts, one), FullPasses() as passes:
        with subprocess.Popen(
            [sys.executable, __file__, "--drive", uri, str(changes), str(rate), *names],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        ) as driver:
            assert driver.stdin is not None and driver.stdout is not None
            times = json.loads(driver.stdout.readline())
            time.sleep(max(0.0, times["finished"] + AFTER - time.monotonic()))
            received, committed = counts.received, counts.committed
            late = time.monotonic() - times["finished"] - AFTER
            driver.stdin.close()
        wait_until(lambda: counts.committed >= changes, f"{changes} events committed")
    rate = changes / (times["finished"] - times["started"])
    in_memory, unreceived = received - committed, changes - received
    return in_memory, unreceived, counts.latencies_ms, rate, passes.pauses_ms, late


@contextlib.contextmanager
def guests(uri: str, count: int) -> Iterator[tuple[list[str], set[str]]]:
    """``count`` running test-driver guests with nova's metadata; removed after."""
    conn = libvirt.open(uri)  # held: the test driver forgets guests of no client
    run_id = uuid.uuid4().hex[:8]
    doms = []
    try:
        for i in range(count):
            dom = conn.defineXML(GUEST_XML.format(name=f"burst-{run_id}-{i:03d}"))
            doms.append(dom)
            dom.create()
        yield [dom.name() for dom in doms], {dom.UUIDString() for dom in doms}
    finally:
        for dom in doms:
            with contextlib.suppress(libvirt.libvirtError):
                if dom.isActive():
                    dom.destroy()
                dom.undefine()
        conn.close()


@contextlib.contextmanager
def daemon(workdir: Path, uri: str | None) -> Iterator[str]:
    """``uri``, or the test driver of a private libvirtd started for the block."""
    if uri is not None:
        yield uri
        return
    directory = workdir / "libvirtd"
    directory.mkdir()
    private = PrivateLibvirtd(directory)
    private.start()
    try:
        yield private.uri
    finally:
        private.stop()


# -- the report ------------------------------------------------------------------


PATHS = {"group": False, "one-by-one": True}


def report(changes: int, results: dict[str, list[tuple]]) -> list[str]:
    lines = [
        f"burst window: {changes} libvirt calls per burst, in memory {AFTER:g} s after the "
        f"burst's last call; callback -> outbox commit (ms); {ANCHOR}",
        f"  {'path':<12}{'p50':>9}{'p90':>9}{'p99':>9}{'max':>9}  per burst: in memory "
        "(not yet received) at calls/s, p99 ms",
    ]
    verdicts = []
    for label, runs in results.items():
        stats = Stats.of([ms for _, _, latencies, *_ in runs for ms in latencies])
        bursts = "; ".join(
            f"{m} = {m / changes:.1%} ({u}) at {rate:.0f}, {Stats.of(latencies).p99:.1f}"
            for m, u, latencies, rate, *_ in runs
        )
        lines.append(
            f"  {label:<12}{stats.p50:9.2f}{stats.p90:9.2f}{stats.p99:9.2f}{stats.max:9.1f}"
            f"  {bursts}"
        )
        if label == "group":
            worst = max(m for m, *_ in runs) / changes
            verdicts.append(
                f"goal: group path at most {GOAL_IN_MEMORY:.0%} in memory: "
                f"{'yes' if worst <= GOAL_IN_MEMORY else 'NO'} (worst {worst:.1%}); "
                f"p99 under {GOAL_P99_MS:g} ms: {'yes' if stats.p99 < GOAL_P99_MS else 'NO'}"
            )
    lates = [late for runs in results.values() for *_, late in runs]
    lines.append(f"  (samples taken up to {max(lates) * 1000:.1f} ms after the {AFTER:g} s mark)")
    pauses = [ms for runs in results.values() for *_, passes, _ in runs for ms in passes]
    lines.append(
        f"  full garbage collection passes while the service ran: {len(pauses)}"
        + (f", longest {max(pauses):.1f} ms" if pauses else "")
        + " (start-up objects frozen, as the service does)"
    )
    return lines + verdicts


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--changes", type=int, default=5000, help="calls per burst (5000)")
    parser.add_argument("--guests", type=int, default=50, help="guests (default 50)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds, paths alternating (2)")
    parser.add_argument(
        "--paths", default="group,one-by-one", help="comma-separated: group, one-by-one"
    )
    parser.add_argument(
        "--uri", help="a libvirt URI to use instead of a private libvirtd (test driver)"
    )
    parser.add_argument(
        "--rate", type=float, default=0, help="calls a second (default 0: as fast as they go)"
    )
    parser.add_argument("--drive", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.paths = [p for p in args.paths.split(",") if p]
    if unknown := set(args.paths) - set(PATHS):
        parser.error(f"unknown paths: {', '.join(sorted(unknown))}")
    if args.changes < 1 or args.guests < 1 or args.rounds < 1 or args.rate < 0:
        parser.error("--changes, --guests and --rounds must be at least 1, --rate at least 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.drive:
        drive(args.drive[0], args.drive[3:], int(args.drive[1]), float(args.drive[2]))
        return 0
    header = [
        f"machine: nproc {os.cpu_count()}, {platform.machine()}, Linux {platform.release()}, "
        f"python {platform.python_version()}; libvirt {libvirt.getVersion()}; RabbitMQ "
        f"{rabbitmq_version()}; {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC",
        f"load average (1 min) at start: {os.getloadavg()[0]:.1f}",
    ]
    results: dict[str, list[tuple]] = {label: [] for label in args.paths}
    with contextlib.ExitStack() as stack:
        workdir = stack.enter_context(tempfile.TemporaryDirectory(prefix="hn-burst-"))
        uri = stack.enter_context(daemon(Path(workdir), args.uri))
        names, uuids = stack.enter_context(guests(uri, args.guests))
        header.append(f"libvirt: {uri}")
        for round_ in range(args.rounds):
            for label in args.paths if round_ % 2 == 0 else args.paths[::-1]:
                progress(f"round {round_ + 1}, {label}: a burst of {args.changes} calls")
                results[label].append(
                    burst(uri, Path(workdir), names, uuids, args.changes, PATHS[label], args.rate)
                )
    header.append(f"load average (1 min) at the end: {os.getloadavg()[0]:.1f}")
    # The latencies are wall time: on a loaded machine a descheduled thread shows as a stall.
    print("\n".join([*header, *report(args.changes, results)]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
