"""A fleet of simulated compute hosts on a 3-node RabbitMQ cluster: rates, latency, broker cost.

Usage: ``python benchmarks/fleet.py [--runs 100:classic,100:quorum,1000:quorum]
[--duration 60] [--rate 1] [--processes 2] [--burst-phase spread|together]
[--subscriber-connections shared|per-host] [--idle 15] [--profile idle|loaded|none]
[--leader-locator client-local] [--erl-args "+S 1:1"] [--conf LINES] [--advanced TERMS]
[--transport-url URL]`` (or ``tox -e bench``).

A benchmark, not a test. It starts a 3-node cluster of its own
(``tests/functional/cluster.py``: own node names, ports, data directories and
cookie; ``pause_minority``) with an operator's settings at scale (below; the
options change them), unless ``--transport-url`` names one. For each run (N
hosts, a queue type) it starts ``--processes`` publishing and as many
consuming processes (``fleet_worker.py``), each with its share of the N
hosts: per host, the project's real :class:`Publisher` (memory outbox; its
own durable host queue of that type; a connection of its own, as on a real
host) in a publishing process, and a real :class:`Subscriber` of that queue
in a consuming one (a host's notifier and its nova-compute adapter are
separate processes too), both with the transport URL naming all three
nodes, rotated to start at the host's own node. The subscribers of a
process whose hosts start at the same node share one connection to it and a
thread (:class:`SubscriberGroup`, a channel each) unless
``--subscriber-connections per-host``. Once every subscriber consumes, the
fleet idles ``--idle`` seconds (its CPU measured: what connections, queues
and timers cost without events), then each host publishes one event per
second (``--rate``) with a burst of ``--burst`` events every
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
connections per node and its memory per host queue (``rabbitmqctl``, idle
and after the run: never while it runs, each call boots an Erlang VM), the
machine's run queue, the CPU of each node, of the publishing and consuming
workers and of everything else, idle and from the go to the last callback,
and that CPU per event (less the idle fleet's share). ``--profile`` adds
each node's busiest kinds of Erlang process (reductions over 5 s).

Goals (issue): 1,000 hosts at one event per second with bursts, p99
publish-to-callback under 50 ms, nothing lost.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import amqp
from fleet_probe import (
    SETTINGS_APPLIED,
    CpuSample,
    RunQueue,
    busiest,
    cluster_ctl,
    connections_per_node,
    queue_memory,
)
from harness import Stats, machine_line, package_state, progress, verdict, versions

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the tests' cluster, imported by its package path

from hypervisor_notifier.transport_url import TransportURL  # noqa: E402
from tests.functional.cluster import RabbitCluster  # noqa: E402

WORKER = Path(__file__).with_name("fleet_worker.py")
TOPIC = "hypervisor_events"
GOAL_P99_MS = 50.0
#: What an operator of a cluster holding thousands of host queues sets (doc/source/scale.rst):
#: the per-object statistics (every connection, channel and queue) emitted every minute
#: rather than every 5 s.
CLUSTER_SETTINGS = "collect_statistics_interval = 60000\n"
#: And each quorum queue member's housekeeping tick (metrics) every 30 s rather than 5 s.
CLUSTER_ADVANCED = "[{rabbit, [{quorum_tick_interval, 30000}]}].\n"
#: A quorum queue's leader on the node its declaring client (the host's publisher) is
#: connected to: with each host's URL starting at a node of its own, the leaders are spread,
#: and a publish and its confirm stay on one node (``balanced``: two thirds cross nodes).
LEADER_LOCATOR = "client-local"
#: One scheduler thread per node: the three nodes share this machine's 2 cores, and the
#: default (a scheduler per core, 6 for 2 cores) costs about 30% more broker CPU per event.
CLUSTER_ERL_ARGS = "+S 1:1"


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
    parser.add_argument("--idle", type=float, default=15.0,
                        help="seconds of CPU measured with the fleet connected, idle")  # fmt: skip
    parser.add_argument("--profile", choices=("idle", "loaded", "none"), default="idle",
                        help="each node's busiest Erlang processes: when")  # fmt: skip
    parser.add_argument("--erl-args", default=CLUSTER_ERL_ARGS, help="the nodes' VM flags")
    parser.add_argument("--leader-locator", default=LEADER_LOCATOR, help="queue_leader_locator")
    parser.add_argument("--conf", default="", help="more rabbitmq.conf lines (\\n-separated)")
    parser.add_argument("--advanced", default=CLUSTER_ADVANCED, help="advanced.config")
    parser.add_argument("--transport-url", help="an existing cluster (default: start one)")
    args = parser.parse_args(argv)
    args.runs = [(int(n), kind) for n, kind in (run.split(":") for run in args.runs.split(","))]
    return args


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
    pids = [worker.pid for worker in publishers], [worker.pid for worker in subscribers]
    progress(f"{hosts} hosts ({queue_type}) ready in {setup:.1f} s; idle for {args.idle:g} s")
    # Idle: every connection open, every queue consumed, no event. What the fleet costs
    # by just being there (heartbeats, Raft ticks, timers), apart from what events cost.
    before = CpuSample.now(cluster, *pids)
    time.sleep(args.idle)
    idle = CpuSample.now(cluster, *pids).since(before)
    lines = [f"  {idle.line('idle (connected, no events)')}"]
    memory_idle = queue_memory(cluster, f"{TOPIC}.fleet-{run_id}")
    nodes = connections_per_node(cluster)
    if args.profile == "idle":
        lines.append(f"  busiest Erlang processes idle (reductions in 5 s): {busiest(cluster)}")
    progress(f"{lines[0].strip()}; publishing")
    run_queue = RunQueue()
    run_queue.start()
    before = CpuSample.now(cluster, *pids)
    for worker in publishers:
        assert worker.stdin is not None
        worker.stdin.write("go\n")
        worker.stdin.flush()
    if args.profile == "loaded":  # a rabbitmqctl VM mid-run: its latency suffers
        time.sleep(args.duration / 2)
        lines.append(f"  busiest Erlang processes loaded (5 s): {busiest(cluster)}")
    # No rabbitmqctl until every event arrived: each boots an Erlang VM, a core-second.
    sent, late, cpu = {}, [], [0.0, 0.0]
    for worker in publishers:
        result = finish(worker, args, "")
        sent.update((host["host"], host) for host in result["hosts"])
        late += result["late_ms"]
        cpu[0] += result["cpu_s"]
    expected = json.dumps({host: report["sent"] for host, report in sent.items()}) + "\n"
    reports = []
    for worker in subscribers:
        result = finish(worker, args, expected)
        reports += [{**sent[host["host"]], **host} for host in result["hosts"]]
        cpu[1] += result["cpu_s"]
    # From the go to the last event received; the workers reported their own CPU.
    after = CpuSample.now(cluster, [], [])
    loaded = dataclasses.replace(after, publishers=cpu[0], subscribers=cpu[1]).since(before)
    lines += [f"  {run_queue.line()}", f"  {loaded.line('from the go to the last callback')}"]
    memory = queue_memory(cluster, f"{TOPIC}.fleet-{run_id}")
    delete_fleet(url, exchange, [f"{TOPIC}.{name}" for name in names])
    figures = report(args, hosts, queue_type, setup, reports, late, memory)
    events = sum(r["sent"] for r in reports) or 1
    return [
        *figures[:-1],
        f"  memory {per_queue(memory_idle):.1f} KiB per host queue idle (before publishing)",
        f"  broker connections per node (idle): {nodes}",
        *lines,
        f"  {cost_per_event(idle, loaded, events)}",
        figures[-1],
    ]


def per_queue(memory: list[int]) -> float:
    """The mean of ``memory`` (bytes per queue), in KiB."""
    return sum(memory) / len(memory) / 1024 if memory else 0.0


def cost_per_event(idle: CpuSample, loaded: CpuSample, events: int) -> str:
    """CPU ms per event, go to last callback: all of it, and less what the idle fleet costs."""

    def ms(loaded_s: float, idle_s: float) -> str:
        extra = loaded_s - idle_s / idle.wall * loaded.wall if idle.wall else loaded_s
        return f"{loaded_s / events * 1000:.2f} ({extra / events * 1000:.2f})"

    return (f"CPU ms per event, all (less the idle fleet's): nodes "
            f"{ms(sum(loaded.nodes), sum(idle.nodes))}, publishers "
            f"{ms(loaded.publishers, idle.publishers)}, subscribers "
            f"{ms(loaded.subscribers, idle.subscribers)}; {events:,} events")  # fmt: skip


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
    behind = Stats.of(late or [0.0])
    return [
        f"{hosts:,} hosts, {queue_type} host queues, {args.processes} + {args.processes} "
        f"processes (publishers, subscribers), subscribers' connections "
        f"{args.subscriber_connections}, {args.rate:g} event/s "
        f"per host + a burst of {args.burst} every {args.burst_every} s ({args.burst_phase}), "
        f"{args.duration:g} s:",
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
        f"  {len(memory)} host queues, memory {per_queue(memory):.1f} KiB per queue (after the "
        f"run, drained)",
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
            extra = "".join(f"{line}\n" for line in args.conf.split("\\n") if line)
            conf = f"queue_leader_locator = {args.leader_locator}\n{CLUSTER_SETTINGS}{extra}"
            cluster = RabbitCluster(Path(tmp), conf, args.advanced, args.erl_args)
            started = time.monotonic()
            cluster.start()
            lines.append(f"3-node cluster started in {time.monotonic() - started:.1f} s")
        try:
            if cluster is not None:
                applied = cluster_ctl(cluster, "eval", SETTINGS_APPLIED).strip()
                lines.append(f"cluster settings (leader locator, statistics, tick ms): {applied}; "
                             f"rabbitmq.conf {conf!r}, advanced.config {args.advanced!r}, "
                             f"Erlang flags {args.erl_args!r}")  # fmt: skip
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
