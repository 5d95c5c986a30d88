"""A fleet of simulated compute hosts on a 3-node RabbitMQ cluster: rates, latency, broker cost.

Usage: ``python benchmarks/fleet.py [--runs 100:classic,100:quorum,1000:quorum]
[--duration 60] [--rate 1] [--processes 2] [--burst-phase spread|together]
[--subscriber-connections shared|per-host] [--transport-url URL]`` (or ``tox -e bench``).

A benchmark, not a test. It starts a 3-node cluster of its own
(``tests/functional/cluster.py``: own node names, ports, data directories and
cookie; ``pause_minority``), unless ``--transport-url`` names one. For each
run (N hosts, a queue type) it starts ``--processes`` publishing and as many
consuming processes (``fleet_worker.py``), each with its share of the N
hosts: per host, the project's real :class:`Publisher` (memory outbox; its
own durable host queue of that type; a connection of its own, as on a real
host) in a publishing process, and a real :class:`Subscriber` of that queue
in a consuming one (a host's notifier and its nova-compute adapter are
separate processes too), both with the transport URL naming all three
nodes. The subscribers of a process share one connection and thread per 500
(:class:`SubscriberGroup`, a channel each) unless ``--subscriber-connections
per-host``. Once every subscriber consumes, each host publishes one event
per second (``--rate``) with a burst of ``--burst`` events every
``--burst-every`` seconds, for ``--duration`` seconds; hosts are spread
evenly over each second, and so are their bursts over the burst period
(``--burst-phase spread``; ``together``: every host's burst in the same
second, a correlated storm).

It prints, per run: the setup time (connections, declarations), events sent
and received, the aggregate rate, publish-to-callback p50/p99 over all
events and the worst host's p99 (``occurred_at`` is stamped when the event is
put into the publisher's outbox; the callback reads the wall clock: one
clock, one machine), how late the event generator ran (apart: not latency),
whether any host lost an event or received another host's, the broker's
connections per node, its memory per host queue (``rabbitmqctl list_queues
memory``, read while the fleet runs), each node's Erlang run queue (sampled
mid-run), the machine's run queue, and the CPU seconds of each node, of the
workers and of everything else on the machine (other processes load it).

Goals (issue): 1,000 hosts at one event per second with bursts, p99
publish-to-callback under 50 ms, nothing lost.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import amqp
from harness import (
    Cpu,
    Stats,
    machine_line,
    package_state,
    progress,
    verdict,
    versions,
)

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the tests' cluster, imported by its package path

from hypervisor_notifier.transport_url import TransportURL  # noqa: E402
from tests.functional.cluster import RabbitCluster  # noqa: E402

WORKER = Path(__file__).with_name("fleet_worker.py")
TOPIC = "hypervisor_events"
GOAL_P99_MS = 50.0
#: What an operator of a cluster holding thousands of host queues sets (doc/source/scale.rst):
#: quorum queue leaders spread over the nodes rather than on the declaring client's node,
#: and the per-object statistics (every connection, channel and queue) emitted every
#: minute rather than every 5 s.
CLUSTER_SETTINGS = "queue_leader_locator = balanced\ncollect_statistics_interval = 60000\n"
#: And each quorum queue member's housekeeping tick (metrics) every 30 s rather than 5 s.
CLUSTER_ADVANCED = "[{rabbit, [{quorum_tick_interval, 30000}]}].\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default="100:classic,100:quorum,1000:quorum",
                        help="comma-separated HOSTS:QUEUE_TYPE runs")  # fmt: skip
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of publishing")
    parser.add_argument("--rate", type=float, default=1.0, help="events per second per host")
    parser.add_argument("--burst", type=int, default=10, help="events of a burst")
    parser.add_argument("--burst-every", type=int, default=20, help="seconds between bursts")
    parser.add_argument("--burst-phase", choices=("spread", "together"), default="spread",
                        help="each host's burst in its own second, or all at once")  # fmt: skip
    parser.add_argument("--subscriber-connections", choices=("shared", "per-host"),
                        default="shared", help="one per process (a channel each)")  # fmt: skip
    parser.add_argument("--processes", type=int, default=2,
                        help="worker processes of each role (publish, consume)")  # fmt: skip
    parser.add_argument("--transport-url", help="an existing cluster (default: start one)")
    args = parser.parse_args(argv)
    args.runs = [(int(n), kind) for n, kind in (run.split(":") for run in args.runs.split(","))]
    return args


def cluster_ctl(cluster: RabbitCluster | None, *args: str) -> str:
    if cluster is None:
        return ""
    # eval takes no table options: it prints an Erlang term.
    table = () if args[0] == "eval" else ("--no-table-headers",)
    return cluster.any_running().ctl(*args, *table)


def node_cpu(cluster: RabbitCluster | None) -> list[float]:
    """CPU seconds of each of the cluster's Erlang VMs (their pid files)."""
    if cluster is None:
        return []
    return [Cpu.now([int(node.pid_file.read_text())]).broker for node in cluster.nodes]


#: What the nodes run with, read back from one of them.
SETTINGS_APPLIED = (
    "[element(2, application:get_env(rabbit, K)) || K <- [queue_leader_locator,"
    " collect_statistics_interval, quorum_tick_interval]]."
)

#: One rabbitmqctl call (each boots an Erlang VM: costly on a busy machine):
#: 5 samples, 1 s apart, of each node's Erlang run queue (processes ready to run).
RUN_QUEUES = (
    "[{N, [begin timer:sleep(1000), rpc:call(N, erlang, statistics,"
    " [total_run_queue_lengths_all]) end || _ <- lists:seq(1, 5)]}"
    " || N <- rabbit_nodes:all_running()]."
)


def broker_load(cluster: RabbitCluster | None) -> tuple[dict[str, int], str]:
    """Client connections per node (by the port they reached), and the nodes' run queues."""
    if cluster is None:
        return {}, "(not our cluster)"
    try:
        ports = cluster_ctl(cluster, "list_connections", "port").split()
        run_queues = " ".join(cluster_ctl(cluster, "eval", RUN_QUEUES).split())
    except RuntimeError as exc:  # a busy node's CLI timed out: the run's figures still count
        return {}, f"(not read: {str(exc).splitlines()[0]})"
    nodes = collections.Counter(cluster.node_on_port(int(port)).node for port in ports)
    return dict(sorted(nodes.items())), run_queues


class RunQueue(threading.Thread):
    """Samples the machine's runnable threads (``procs_running``) twice a second."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.samples: list[int] = []
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.5):
            stat = open("/proc/stat").read().split("procs_running ")[1]  # noqa: SIM115
            self.samples.append(int(stat.split()[0]) - 1)  # less this sampler

    def line(self) -> str:
        self.done.set()
        samples = sorted(self.samples) or [0]
        return (f"machine run queue (runnable threads, {os.cpu_count()} cores): mean "
                f"{sum(samples) / len(samples):.1f}, p90 {samples[len(samples) * 9 // 10]}, "
                f"max {samples[-1]}")  # fmt: skip


def delete_fleet(url: str, exchange: str, queues: list[str]) -> None:
    """Delete the run's host queues and exchange, over one AMQP connection."""
    broker = TransportURL.parse(url).hosts[0]
    with amqp.Connection(broker.address, userid=broker.username,
                         password=broker.password) as connection:  # fmt: skip
        channel = connection.channel()
        for queue in queues:
            channel.queue_delete(queue)
        channel.exchange_delete(exchange)


def start_workers(
    args: argparse.Namespace, settings: dict, names: list[str], role: str,
    workers: list[subprocess.Popen[str]],
) -> list[subprocess.Popen[str]]:  # fmt: skip
    """Start ``args.processes`` workers of ``role``, each with a share of the hosts; once ready."""
    started = []
    for index in range(args.processes):
        share = names[index :: args.processes]
        worker = subprocess.Popen([sys.executable, str(WORKER)], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True)  # fmt: skip
        assert worker.stdin is not None
        arguments = {**settings, "role": role, "hosts": share, "process": index}
        worker.stdin.write(json.dumps(arguments) + "\n")
        worker.stdin.flush()
        workers.append(worker)
        started.append(worker)
    for worker in started:
        assert worker.stdout is not None
        if worker.stdout.readline().strip() != "ready":
            raise RuntimeError(f"a fleet worker ({role}) did not get ready")
    return started


def finish(worker: subprocess.Popen[str], args: argparse.Namespace, line: str) -> dict:
    """Write ``line`` to a worker, wait for its end, return the JSON report it printed."""
    out, _ = worker.communicate(line or None, timeout=args.duration + 180)
    return json.loads(out.strip().splitlines()[-1])


def run_fleet(args: argparse.Namespace, url: str, cluster: RabbitCluster | None,
              hosts: int, queue_type: str) -> list[str]:  # fmt: skip
    """One run's figures; its workers killed if it fails (they would retry forever)."""
    workers: list[subprocess.Popen[str]] = []
    try:
        return measure_fleet(args, url, cluster, hosts, queue_type, workers)
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait()


def measure_fleet(args: argparse.Namespace, url: str, cluster: RabbitCluster | None,
                  hosts: int, queue_type: str,
                  workers: list[subprocess.Popen[str]]) -> list[str]:  # fmt: skip
    run_id = uuid.uuid4().hex[:6]
    names = [f"fleet-{run_id}-{index:05d}" for index in range(hosts)]
    exchange = f"fleet_{run_id}"
    settings = {"transport_url": url, "exchange": exchange, "topic": TOPIC,
                "queue_type": queue_type, "rate": args.rate, "burst": args.burst,
                "burst_every": args.burst_every, "burst_phase": args.burst_phase,
                "shared": args.subscriber_connections == "shared",
                "duration": args.duration}  # fmt: skip
    started = time.monotonic()
    # Publishers first: they declare the host queues, 25 at a time.
    publishers = start_workers(args, settings, names, "publish", workers)
    subscribers = start_workers(args, settings, names, "consume", workers)
    setup = time.monotonic() - started
    progress(f"{hosts} hosts ({queue_type}) ready in {setup:.1f} s; publishing")
    cpu_before, machine_before = node_cpu(cluster), Cpu.now([])
    children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    run_queue = RunQueue()
    run_queue.start()
    for worker in publishers:
        assert worker.stdin is not None
        worker.stdin.write("go\n")
        worker.stdin.flush()
    time.sleep(min(args.duration / 2, 30))  # mid-run: what the broker holds while it runs
    listed = cluster_ctl(cluster, "list_queues", "name", "type", "memory").splitlines()
    queues = [line.split("\t") for line in listed]
    memory = [int(m) for name, kind, m in queues if name.startswith(f"{TOPIC}.fleet-{run_id}")]
    nodes, run_queues = broker_load(cluster)
    sent, late = {}, []
    for worker in publishers:
        result = finish(worker, args, "")
        sent.update((host["host"], host) for host in result["hosts"])
        late += result["late_ms"]
    expected = json.dumps({host: report["sent"] for host, report in sent.items()}) + "\n"
    reports = []
    for worker in subscribers:
        for host in finish(worker, args, expected)["hosts"]:
            reports.append({**sent[host["host"]], **host})
    machine = Cpu.now([])
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_workers = (children.ru_utime + children.ru_stime) - (
        children_before.ru_utime + children_before.ru_stime
    )
    cpu_nodes = [
        after - before for after, before in zip(node_cpu(cluster), cpu_before, strict=True)
    ]
    wall = machine.wall - machine_before.wall
    others = machine.busy - machine_before.busy - sum(cpu_nodes) - cpu_workers
    delete_fleet(url, exchange, [f"{TOPIC}.{name}" for name in names])
    lines = report(args, hosts, queue_type, setup, reports, late, memory)
    return [
        *lines[:-1],
        f"  broker connections per node (mid-run): {nodes}",
        f"  Erlang run queue per node (5 samples mid-run): {run_queues}",
        f"  {run_queue.line()}",
        f"  CPU over {wall:.0f} s: cluster nodes "
        + " + ".join(f"{cpu:.0f}" for cpu in cpu_nodes)
        + f" s, fleet workers {cpu_workers:.0f} s, other processes {max(0.0, others):.0f} s "
        f"(the machine has {len(os.sched_getaffinity(0)) * wall:.0f} core-s)",
        lines[-1],
    ]


def report(args: argparse.Namespace, hosts: int, queue_type: str, setup: float,
           reports: list[dict], late: list[float], memory: list[int]) -> list[str]:  # fmt: skip
    sent = sum(r["sent"] for r in reports)
    received = sum(r["received"] for r in reports)
    lossy = [r["host"] for r in reports if r["received"] != r["sent"]]
    foreign = sum(r["foreign"] for r in reports)
    every = Stats.of([ms for r in reports for ms in r["latencies_ms"]] or [0.0])
    confirms = Stats.of([ms for r in reports for ms in r["confirms_ms"]] or [0.0])
    worst = max((Stats.of(r["latencies_ms"]).p99 for r in reports if r["latencies_ms"]),
                default=0.0)  # fmt: skip
    per_queue = sum(memory) / len(memory) / 1024 if memory else 0.0
    behind = Stats.of(late or [0.0])
    return [
        f"{hosts:,} hosts, {queue_type} host queues, {args.processes} + {args.processes} "
        f"processes (publishers, subscribers), subscribers' "
        f"connections {args.subscriber_connections}, {args.rate:g} event/s per host + a burst "
        f"of {args.burst} every {args.burst_every} s ({args.burst_phase}), {args.duration:g} s:",
        f"  setup (connections, declarations, consumers) {setup:.1f} s; events sent {sent:,}, "
        f"received {received:,} ({received / args.duration:,.0f}/s aggregate)",
        f"  publish -> callback ms: p50 {every.p50:.1f}, p99 {every.p99:.1f}, max "
        f"{every.max:.1f}; worst host's p99 {worst:.1f}",
        f"  put -> broker confirm (publisher, replication) ms: p50 {confirms.p50:.1f}, "
        f"p99 {confirms.p99:.1f}, max {confirms.max:.1f}",
        f"  hosts that lost events: {len(lossy)}; events of another host received: {foreign}; "
        f"resent: {sum(r['resent'] for r in reports)}",
        f"  event generator late (not counted as latency): {len(late):,} of the hosts' turns, "
        f"p99 {behind.p99:.1f} ms, max {behind.max:.1f} ms",
        f"  {len(memory)} host queues, memory {per_queue:.1f} KiB per queue (mid-run)",
        f"  goal: p99 < {GOAL_P99_MS:g} ms: {verdict(every.p99 < GOAL_P99_MS)}; nothing lost: "
        f"{verdict(not lossy and received == sent)}; each host only its own events: "
        f"{verdict(foreign == 0)}",
    ]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    lines = [machine_line(), f"package: {package_state()}; " + versions("amqp", "kombu")]
    with tempfile.TemporaryDirectory(prefix="hn-fleet-") as tmp:
        cluster = None
        if args.transport_url is None:
            progress("starting a 3-node RabbitMQ cluster")
            cluster = RabbitCluster(Path(tmp), CLUSTER_SETTINGS, CLUSTER_ADVANCED)
            started = time.monotonic()
            cluster.start()
            lines.append(f"3-node cluster started in {time.monotonic() - started:.1f} s")
        try:
            if cluster is not None:
                applied = cluster_ctl(cluster, "eval", SETTINGS_APPLIED).strip()
                lines.append(f"cluster settings (leader locator, statistics, tick ms): {applied}")
            url = args.transport_url or cluster.transport_url  # type: ignore[union-attr]
            for hosts, queue_type in args.runs:
                figures = run_fleet(args, url, cluster, hosts, queue_type)
                progress("\n".join(figures))  # each run's as it ends: a later one may fail
                lines += figures
        finally:
            if cluster is not None:
                cluster.stop()
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
