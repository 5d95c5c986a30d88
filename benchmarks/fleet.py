"""A fleet of simulated compute hosts on a 3-node RabbitMQ cluster: rates, latency, broker cost.

Usage: ``python benchmarks/fleet.py [--runs 100:classic,100:quorum,1000:quorum]
[--duration 60] [--rate 1] [--processes 4] [--transport-url URL]`` (or ``tox -e bench``).

A benchmark, not a test. It starts a 3-node cluster of its own
(``tests/functional/cluster.py``: own node names, ports, data directories and
cookie; ``pause_minority``), unless ``--transport-url`` names one. For each
run (N hosts, a queue type) it starts ``--processes`` processes
(``fleet_worker.py``), each with its share of the N hosts: per host, the
project's real :class:`Publisher` (memory outbox; its own durable host queue
of that type) and a real :class:`Subscriber` of that queue, both with the
transport URL naming all three nodes. Once every subscriber consumes, each
host publishes one event per second (``--rate``) with a burst of
``--burst`` events every ``--burst-every`` seconds, for ``--duration``
seconds; hosts are spread evenly over each second.

It prints, per run: the setup time (connections, declarations), events sent
and received, the aggregate rate, publish-to-callback p50/p99 over all
events and the worst host's p99 (``occurred_at`` is stamped when the event is
put; the callback reads the wall clock: one clock, one machine), whether any
host lost an event or received another host's, the broker's connections, its
memory per host queue (``rabbitmqctl list_queues memory``, read while the
fleet runs), and the CPU seconds of the cluster's nodes and of the workers.

Goals (issue): 1,000 hosts at one event per second with bursts, p99
publish-to-callback under 50 ms, nothing lost.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import amqp
from harness import (
    Cpu,
    Stats,
    broker_pids,
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


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default="100:classic,100:quorum,1000:quorum",
                        help="comma-separated HOSTS:QUEUE_TYPE runs")  # fmt: skip
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of publishing")
    parser.add_argument("--rate", type=float, default=1.0, help="events per second per host")
    parser.add_argument("--burst", type=int, default=10, help="events of a burst")
    parser.add_argument("--burst-every", type=int, default=20, help="seconds between bursts")
    parser.add_argument("--processes", type=int, default=4, help="worker processes")
    parser.add_argument("--transport-url", help="an existing cluster (default: start one)")
    args = parser.parse_args(argv)
    args.runs = [(int(n), kind) for n, kind in (run.split(":") for run in args.runs.split(","))]
    return args


def cluster_ctl(cluster: RabbitCluster | None, *args: str) -> str:
    if cluster is None:
        return ""
    return cluster.any_running().ctl(*args, "--no-table-headers")


def node_cpu(cluster: RabbitCluster | None) -> float:
    """CPU seconds of the cluster's Erlang VMs (found by their HOME on the command line)."""
    if cluster is None:
        return 0.0
    return Cpu.now(broker_pids(str(cluster.nodes[0].home).encode())).broker


def delete_fleet(url: str, exchange: str, queues: list[str]) -> None:
    """Delete the run's host queues and exchange, over one AMQP connection."""
    broker = TransportURL.parse(url).hosts[0]
    with amqp.Connection(broker.address, userid=broker.username,
                         password=broker.password) as connection:  # fmt: skip
        channel = connection.channel()
        for queue in queues:
            channel.queue_delete(queue)
        channel.exchange_delete(exchange)


def run_fleet(args: argparse.Namespace, url: str, cluster: RabbitCluster | None,
              hosts: int, queue_type: str) -> list[str]:  # fmt: skip
    run_id = uuid.uuid4().hex[:6]
    names = [f"fleet-{run_id}-{index:05d}" for index in range(hosts)]
    exchange = f"fleet_{run_id}"
    settings = {"transport_url": url, "exchange": exchange, "topic": TOPIC,
                "queue_type": queue_type, "rate": args.rate, "burst": args.burst,
                "burst_every": args.burst_every, "duration": args.duration}  # fmt: skip
    started = time.monotonic()
    children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    workers = []
    for index in range(args.processes):
        share = names[index :: args.processes]
        worker = subprocess.Popen([sys.executable, str(WORKER)], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True)  # fmt: skip
        assert worker.stdin is not None
        worker.stdin.write(json.dumps({**settings, "hosts": share}) + "\n")
        worker.stdin.flush()
        workers.append(worker)
    for worker in workers:
        assert worker.stdout is not None
        if worker.stdout.readline().strip() != "ready":
            raise RuntimeError("a fleet worker did not get ready")
    setup = time.monotonic() - started
    progress(f"{hosts} hosts ({queue_type}) ready in {setup:.1f} s; publishing")
    cpu_before = node_cpu(cluster)
    for worker in workers:
        assert worker.stdin is not None
        worker.stdin.write("go\n")
        worker.stdin.flush()
    time.sleep(min(args.duration / 2, 30))  # mid-run: what the broker holds while it runs
    connections = len(cluster_ctl(cluster, "list_connections", "name").splitlines())
    listed = cluster_ctl(cluster, "list_queues", "name", "type", "memory").splitlines()
    queues = [line.split("\t") for line in listed]
    memory = [int(m) for name, kind, m in queues if name.startswith(f"{TOPIC}.fleet-{run_id}")]
    reports = []
    for worker in workers:
        out, _ = worker.communicate(timeout=args.duration + 180)
        reports += json.loads(out.strip().splitlines()[-1])
    cpu_nodes = node_cpu(cluster) - cpu_before
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_workers = (children.ru_utime + children.ru_stime) - (
        children_before.ru_utime + children_before.ru_stime
    )
    delete_fleet(url, exchange, [f"{TOPIC}.{name}" for name in names])
    return report(args, hosts, queue_type, setup, reports, connections, memory,
                  cpu_nodes, cpu_workers)  # fmt: skip


def report(args: argparse.Namespace, hosts: int, queue_type: str, setup: float,
           reports: list[dict], connections: int, memory: list[int],
           cpu_nodes: float, cpu_workers: float) -> list[str]:  # fmt: skip
    sent = sum(r["sent"] for r in reports)
    received = sum(r["received"] for r in reports)
    lossy = [r["host"] for r in reports if r["received"] != r["sent"]]
    foreign = sum(r["foreign"] for r in reports)
    every = Stats.of([ms for r in reports for ms in r["latencies_ms"]] or [0.0])
    worst = max((Stats.of(r["latencies_ms"]).p99 for r in reports if r["latencies_ms"]),
                default=0.0)  # fmt: skip
    per_queue = sum(memory) / len(memory) / 1024 if memory else 0.0
    return [
        f"{hosts:,} hosts, {queue_type} host queues, {args.processes} processes, "
        f"{args.rate:g} event/s per host + a burst of {args.burst} every {args.burst_every} s, "
        f"{args.duration:g} s:",
        f"  setup (connections, declarations, consumers) {setup:.1f} s; events sent {sent:,}, "
        f"received {received:,} ({received / args.duration:,.0f}/s aggregate)",
        f"  publish -> callback ms: p50 {every.p50:.1f}, p99 {every.p99:.1f}, max "
        f"{every.max:.1f}; worst host's p99 {worst:.1f}",
        f"  hosts that lost events: {len(lossy)}; events of another host received: {foreign}; "
        f"resent: {sum(r['resent'] for r in reports)}",
        f"  broker: {connections:,} connections; {len(memory)} host queues, memory "
        f"{per_queue:.1f} KiB per queue (mid-run); CPU: cluster nodes {cpu_nodes:.0f} s, "
        f"workers {cpu_workers:.0f} s",
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
            cluster = RabbitCluster(Path(tmp))
            started = time.monotonic()
            cluster.start()
            lines.append(f"3-node cluster started in {time.monotonic() - started:.1f} s")
        try:
            url = args.transport_url or cluster.transport_url  # type: ignore[union-attr]
            for hosts, queue_type in args.runs:
                lines += run_fleet(args, url, cluster, hosts, queue_type)
        finally:
            if cluster is not None:
                cluster.stop()
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
