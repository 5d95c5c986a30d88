"""What the fleet benchmark reads of the cluster and the machine: CPU, connections, Erlang.

Not a benchmark: ``fleet.py`` imports it. Every ``rabbitmqctl`` call boots an
Erlang VM of its own (a second of CPU on a busy machine): the benchmark makes
them outside the window whose latency it measures.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from harness import Cpu

if TYPE_CHECKING:  # fleet.py puts the repository on sys.path for it
    from tests.functional.cluster import RabbitCluster

#: What the nodes run with, read back from one of them.
SETTINGS_APPLIED = (
    "[element(2, application:get_env(rabbit, K)) || K <- [queue_leader_locator,"
    " collect_statistics_interval, quorum_tick_interval]]."
)

#: One rabbitmqctl call: on each node at once, the reductions (Erlang's unit of work)
#: its processes did over SECONDS, summed by the module that started each process,
#: the TOP largest: what a node spends its CPU on.
BUSIEST = """
Kind = fun(P) -> case erlang:process_info(P, [dictionary, initial_call]) of
    [{{dictionary, D}}, {{initial_call, I}}] ->
        element(1, proplists:get_value('$initial_call', D, I));
    _ -> gone end end,
Snap = fun() -> maps:from_list([{{P, R}} || P <- erlang:processes(),
    {{reductions, R}} <- [erlang:process_info(P, reductions)]]) end,
Top = fun() -> A = Snap(), timer:sleep({seconds} * 1000), B = Snap(),
    Sums = maps:fold(fun(P, _, Acc) when P =:= self() -> Acc; (P, R, Acc) -> K = Kind(P),
        maps:update_with(K, fun(S) -> S + R - maps:get(P, A, 0) end, R - maps:get(P, A, 0), Acc)
        end, #{{}}, B),
    lists:sublist(lists:reverse(lists:keysort(2, maps:to_list(Sums))), {top}) end,
Nodes = rabbit_nodes:all_running(),
{{Results, []}} = rpc:multicall(Nodes, erlang, apply, [Top, []], 60000),
lists:zip(Nodes, Results).
"""


def cluster_ctl(cluster: RabbitCluster | None, *args: str) -> str:
    """rabbitmqctl against a running node of ``cluster`` (nothing when not ours)."""
    if cluster is None:
        return ""
    # eval takes no table options: it prints an Erlang term.
    table = () if args[0] == "eval" else ("--no-table-headers",)
    return cluster.any_running().ctl(*args, *table)


def busiest(cluster: RabbitCluster | None, seconds: int = 5, top: int = 6) -> str:
    """Each node's busiest kinds of Erlang process over ``seconds`` (reductions), one line."""
    if cluster is None:
        return "(not our cluster)"
    try:
        out = cluster_ctl(cluster, "eval", BUSIEST.format(seconds=seconds, top=top))
    except RuntimeError as exc:
        return f"(not read: {str(exc).splitlines()[0]})"
    return " ".join(out.split())


def connections_per_node(cluster: RabbitCluster | None) -> dict[str, int] | str:
    """Client connections per node (by the port they reached)."""
    if cluster is None:
        return "(not our cluster)"
    try:
        ports = cluster_ctl(cluster, "list_connections", "port").split()
    except RuntimeError as exc:  # a busy node's CLI timed out: the run's figures still count
        return f"(not read: {str(exc).splitlines()[0]})"
    nodes = collections.Counter(cluster.node_on_port(int(port)).node for port in ports)
    return dict(sorted(nodes.items()))


def queue_memory(cluster: RabbitCluster | None, prefix: str) -> list[int]:
    """The memory (bytes) of each queue whose name starts with ``prefix``."""
    listed = cluster_ctl(cluster, "list_queues", "name", "memory").splitlines()
    return [int(m) for name, m in (line.split("\t") for line in listed) if name.startswith(prefix)]


@dataclasses.dataclass(frozen=True)
class CpuSample:
    """CPU seconds so far: each cluster node, the fleet's publishing and consuming workers, all."""

    wall: float
    nodes: list[float]
    publishers: float
    subscribers: float
    busy: float

    @classmethod
    def now(
        cls, cluster: RabbitCluster | None, publishers: list[int], subscribers: list[int]
    ) -> CpuSample:
        nodes = []
        for node in cluster.nodes if cluster is not None else []:
            pid = 0
            with contextlib.suppress(OSError, ValueError):
                pid = int(node.pid_file.read_text())
            nodes.append(Cpu.now([pid] if pid else []).broker)
        machine = Cpu.now(publishers)
        return cls(machine.wall, nodes, machine.broker, Cpu.now(subscribers).broker, machine.busy)

    def since(self, before: CpuSample) -> CpuSample:
        """The CPU seconds between ``before`` and this sample."""
        return CpuSample(
            self.wall - before.wall,
            [after - start for after, start in zip(self.nodes, before.nodes, strict=True)],
            self.publishers - before.publishers,
            self.subscribers - before.subscribers,
            self.busy - before.busy,
        )

    @property
    def workers(self) -> float:
        """The fleet's worker processes, both roles."""
        return self.publishers + self.subscribers

    @property
    def others(self) -> float:
        """What neither the nodes nor the workers used (other processes, rabbitmqctl)."""
        return max(0.0, self.busy - sum(self.nodes) - self.workers)

    def line(self, label: str) -> str:
        """The split (a delta) as percent of one core."""
        cores = len(os.sched_getaffinity(0))

        def pct(seconds: float) -> str:
            return f"{seconds / self.wall * 100:.0f}%"

        return (f"CPU {label} over {self.wall:.0f} s (% of a core, {cores} cores): nodes "
                + " + ".join(pct(node) for node in self.nodes)
                + f" = {pct(sum(self.nodes))}, fleet workers {pct(self.workers)} (publishers "
                f"{pct(self.publishers)}, subscribers {pct(self.subscribers)}), "
                f"other processes {pct(self.others)}")  # fmt: skip


class RunQueue(threading.Thread):
    """Samples the machine's runnable threads (``procs_running``) twice a second."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.samples: list[int] = []
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.5):
            stat = Path("/proc/stat").read_text().split("procs_running ")[1]
            self.samples.append(int(stat.split()[0]) - 1)  # less this sampler

    def line(self) -> str:
        self.done.set()
        samples = sorted(self.samples) or [0]
        return (f"machine run queue (runnable threads, {os.cpu_count()} cores): mean "
                f"{sum(samples) / len(samples):.1f}, p90 {samples[len(samples) * 9 // 10]}, "
                f"max {samples[-1]}")  # fmt: skip
