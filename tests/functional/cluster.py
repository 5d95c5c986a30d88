"""A 3-node RabbitMQ cluster of the tests' own, on this machine.

Three private plain-TCP nodes (:class:`~.privaterabbit.PrivateRabbit`: own
node names, ports, data directories and logs) that share one Erlang cookie
(their common HOME) and nothing else: the machine's node on 127.0.0.1:5672
is never touched. ``cluster_partition_handling = pause_minority``, as a
production cluster runs. Nodes 2 and 3 join node 1 (``join_cluster``).

Started once per test session (the first test that asks), reused, killed at
its end by the pids it started. A node killed by a test is started again by
:meth:`RabbitCluster.start_node`.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

from .privaterabbit import PrivateRabbit

SIZE = 3


class ClusterNode(PrivateRabbit):
    """One node of the cluster.

    Arguments:
        name: Its Erlang node name (``name@localhost``).
        directory: Its own data, logs and config.
        home: The HOME (Erlang cookie) every node of the cluster shares.
        settings: More lines of its ``rabbitmq.conf``.
        advanced: Its ``advanced.config`` (Erlang terms, for what ``rabbitmq.conf``
            cannot set); empty: none.
        erl_args: More flags of its Erlang VM (``RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS``).

    """

    extra_config = "loopback_users = none\ncluster_partition_handling = pause_minority\n"

    def __init__(
        self,
        name: str,
        directory: Path,
        home: Path,
        settings: str = "",
        advanced: str = "",
        erl_args: str = "",
    ) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        super().__init__(directory, tls=False)
        self.extra_config = ClusterNode.extra_config + settings
        self.advanced = advanced
        self.erl_args = erl_args
        self.node = name
        self.home = home
        #: Cut off from the others by :meth:`RabbitCluster.partition`.
        self.partitioned = False

    @property
    def env(self) -> dict[str, str]:
        extra = {}
        if self.advanced:
            extra["RABBITMQ_ADVANCED_CONFIG_FILE"] = self.path("advanced.config")
        if self.erl_args:
            extra["RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS"] = self.erl_args
        return {**super().env, "HOME": str(self.home), **extra}

    def start(self) -> None:
        if self.advanced:
            (self.directory / "advanced.config").write_text(self.advanced)
        super().start()

    @property
    def address(self) -> str:
        """``guest:guest@127.0.0.1:PORT``: one host of a multi-host transport URL."""
        return f"guest:guest@127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


class RabbitCluster:
    """Three clustered nodes; :attr:`transport_url` names all three.

    Arguments:
        directory: Where the nodes' directories and their shared HOME go.
        settings: More lines of every node's ``rabbitmq.conf`` (a benchmark's tuning).
        advanced: Every node's ``advanced.config`` (empty: none).
        erl_args: More flags of every node's Erlang VM (empty: none).

    """

    def __init__(
        self, directory: Path, settings: str = "", advanced: str = "", erl_args: str = ""
    ) -> None:
        run = uuid.uuid4().hex[:6]
        home = directory / "home"
        home.mkdir(parents=True)
        # One cookie for every node (rabbitmqctl reads it from HOME too).
        cookie = home / ".erlang.cookie"
        cookie.write_text(uuid.uuid4().hex.upper())
        cookie.chmod(0o400)
        self.nodes = [
            ClusterNode(
                f"hn-c{index}-{run}@localhost",
                directory / f"node{index}",
                home,
                settings,
                advanced,
                erl_args,
            )
            for index in range(1, SIZE + 1)
        ]

    @property
    def transport_url(self) -> str:
        return "rabbit://" + ",".join(node.address for node in self.nodes) + "/"

    def start(self) -> None:
        """Start node 1, then join the others to it; check the cluster has every node."""
        first, *others = self.nodes
        first.start()
        for node in others:
            node.start()
            node.ctl("stop_app")
            node.ctl("join_cluster", first.node)
            node.ctl("start_app")
        running = first.ctl("eval", "length(rabbit_nodes:all_running()).").strip()
        if running != str(SIZE):
            raise RuntimeError(f"cluster formed with {running} running nodes, not {SIZE}")

    def node_on_port(self, port: int) -> ClusterNode:
        return next(node for node in self.nodes if node.port == port)

    def start_node(self, node: ClusterNode) -> None:
        """Start a node a test killed; it rejoins the cluster by itself."""
        if not node.running:
            node.start()

    def partition(self, node: ClusterNode, timeout: float = 60.0) -> None:
        """Cut ``node`` off from the others; return once ``pause_minority`` paused it.

        Erlang's distribution between ``node`` and the others gets a cookie
        that neither side accepts, and their links are dropped: the same as a
        network partition for the nodes, while this machine's CLI still
        reaches ``node`` with the shared cookie.
        """
        node.ctl("eval", f"[begin erlang:set_cookie(N, hn_partitioned), erlang:disconnect_node(N)"
                         f" end || N <- {self._others(node)}].")  # fmt: skip
        node.partitioned = True
        self._wait_running(node, "false", timeout)

    def heal(self, node: ClusterNode, timeout: float = 90.0) -> None:
        """Undo :meth:`partition`; return once ``node`` runs again."""
        restore = "erlang:set_cookie(N, erlang:get_cookie()), net_kernel:connect_node(N)"
        node.ctl("eval", f"[begin {restore} end || N <- {self._others(node)}].")
        self._wait_running(node, "true", timeout)
        node.partitioned = False

    def _others(self, node: ClusterNode) -> str:
        return "[" + ",".join(f"'{other.node}'" for other in self.nodes if other is not node) + "]"

    @staticmethod
    def _wait_running(node: ClusterNode, want: str, timeout: float) -> None:
        # rabbit pauses and resumes on its own timers: nothing to be notified by.
        deadline = time.monotonic() + timeout
        while True:
            try:
                if node.ctl("eval", "rabbit:is_running().").strip() == want:
                    return
            except RuntimeError:
                pass  # the node is between states
            if time.monotonic() > deadline:
                raise RuntimeError(f"{node.node}: rabbit:is_running() is not {want}")
            time.sleep(0.5)

    def any_running(self) -> ClusterNode:
        """A node whose process runs (and that no test partitioned away)."""
        return next(node for node in self.nodes if node.running and not node.partitioned)

    def queue_leader(self, queue: str) -> ClusterNode:
        """The node leading quorum queue ``queue`` now."""
        out = self.any_running().ctl("list_queues", "name", "leader", "--no-table-headers")
        for line in out.splitlines():
            name, _, leader = line.partition("\t")
            if name == queue:
                return next(node for node in self.nodes if node.node == leader.strip())
        raise LookupError(f"no quorum queue {queue!r}")

    def stop(self) -> None:
        """Kill every node started here and wait for it."""
        for node in self.nodes:
            if node.running:
                node.kill9()
