"""A private plain-TCP RabbitMQ node to break, and a firehose tap on it.

The node is :class:`~tests.functional.privaterabbit.PrivateRabbit` with a
plain TCP listener: its own node name, ports, database, logs and Erlang
cookie, so stopping, killing, alarming or changing policies on it touches no
one else. The tap consumes the broker's firehose (what ``rabbitmqctl trace_on``
turns on): a copy of every message published to the test's exchange, with
the queues the broker routed it to, taken before it confirms, nacks or
returns it. What the service published
came out of its outbox: the tap tells what it had accepted, and how many
times it sent each event.
"""

from __future__ import annotations

import collections
import subprocess
import threading
import time
import uuid
from pathlib import Path

import amqp
import amqp.exceptions

from hypervisor_notifier import wire
from hypervisor_notifier.events import LifecycleEvent, MalformedEvent

from ..privaterabbit import RABBITMQ_BIN, START_TIMEOUT, PrivateRabbit
from .checker import Publish

TRACE_EXCHANGE = "amq.rabbitmq.trace"


class ChaosRabbit(PrivateRabbit):
    """A private node listening for plain AMQP on 127.0.0.1:``port`` (guest/guest).

    Arguments:
        directory: Where its config, database and logs go.

    """

    def __init__(self, directory: Path) -> None:
        super().__init__(directory)
        self.node = f"hn-chaos-{uuid.uuid4().hex[:8]}@localhost"
        self.starts = 0

    @property
    def url(self) -> str:
        """Its transport URL."""
        return f"rabbit://guest:guest@127.0.0.1:{self.port}/"

    @property
    def env(self) -> dict[str, str]:
        return {**super().env, "RABBITMQ_ADVANCED_CONFIG_FILE": self.path("advanced.config")}

    def start(self) -> None:
        """Write its config and boot it; return once it accepts AMQP connections."""
        (self.directory / "enabled_plugins").write_text("[].\n")
        (self.directory / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = 127.0.0.1:{self.port}\n"
        )
        # The firehose on from boot (as ``rabbitmqctl trace_on`` would, once booted):
        # every channel, the first one included, is traced.
        (self.directory / "advanced.config").write_text(
            '[{rabbit, [{trace_vhosts, [<<"/">>]}]}].\n'
        )
        self._boot()
        tracing = self.ctl("list_vhosts", "name", "tracing")
        assert "\ttrue" in tracing, f"the firehose is off: {tracing}"

    def _boot(self) -> None:
        log = (self.directory / "server.log").open("ab")
        self.process = subprocess.Popen(
            [str(RABBITMQ_BIN / "rabbitmq-server")],
            env=self.env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        self.starts += 1
        self.wait_accepting()

    def wait_accepting(self) -> None:
        """Wait until the node accepts AMQP connections (its queues recovered by then)."""
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                self.channel_call("close")
                return
            except (OSError, amqp.exceptions.AMQPError):
                assert self.process is not None and self.process.poll() is None, (
                    f"the node exited; see {self.directory / 'server.log'}"
                )
                assert time.monotonic() < deadline, f"the node did not boot in {START_TIMEOUT} s"
                time.sleep(0.1)

    def restart(self) -> None:
        """Boot the node again after :meth:`kill9`, on the same database."""
        self._boot()

    def stop_app(self) -> None:
        self.ctl("stop_app")

    def start_app(self) -> None:
        self.ctl("start_app")
        self.wait_accepting()

    def channel_call(self, method: str, *args: object, **kwargs: object) -> object:
        """One AMQP method on a channel of a new connection to this node."""
        with amqp.Connection(
            f"127.0.0.1:{self.port}", userid="guest", password="guest", connect_timeout=5
        ) as conn:
            return getattr(conn.channel(), method)(*args, **kwargs)


class FirehoseTap(threading.Thread):
    """Record every event published to ``exchange`` on ``node``, as the broker received it.

    ``publishes[event_id]`` lists each time it was published: when the tap
    got the copy (``time.monotonic()``) and whether the broker routed it to
    ``queue``; ``events`` maps an event_id to the event. Reconnects by
    itself across broker restarts (its queue is durable); the firehose is on
    from the node's boot, so only copies in flight in a killed node escape it.

    Arguments:
        node: The private node.
        exchange: The service's exchange.
        queue: The host queue.

    """

    def __init__(self, node: ChaosRabbit, exchange: str, queue: str) -> None:
        super().__init__(name="firehose-tap", daemon=True)
        self.node = node
        self.exchange = exchange
        self.host_queue = queue
        self.queue = f"hn-chaos-tap-{uuid.uuid4().hex[:8]}"
        self.publishes: dict[str, list[Publish]] = collections.defaultdict(list)
        self.events: dict[str, LifecycleEvent] = {}
        self.malformed = 0
        #: Set once the tap consumes (cleared while the node is away).
        self.ready = threading.Event()
        self._halt = threading.Event()
        self._lock = threading.Lock()

    def run(self) -> None:
        while not self._halt.is_set():
            try:
                self._consume()
            except Exception:  # the broker went away: come back when it does
                self.ready.clear()
                self._halt.wait(0.2)

    def _consume(self) -> None:
        with amqp.Connection(
            f"127.0.0.1:{self.node.port}", userid="guest", password="guest", connect_timeout=2
        ) as conn:
            channel = conn.channel()
            channel.queue_declare(self.queue, durable=True, auto_delete=False)
            channel.queue_bind(self.queue, TRACE_EXCHANGE, f"publish.{self.exchange}")
            channel.basic_consume(self.queue, callback=self._on_message, no_ack=True)
            self.ready.set()
            while not self._halt.is_set():
                try:
                    conn.drain_events(timeout=0.2)
                except TimeoutError:
                    conn.heartbeat_tick()

    def _on_message(self, message: amqp.Message) -> None:
        at = time.monotonic()
        try:
            event = wire.decode(message.body)
        except MalformedEvent:
            self.malformed += 1
            return
        routed = self.host_queue in (message.headers or {}).get("routed_queues", [])
        with self._lock:
            self.publishes[event.event_id].append(Publish(at, routed))
            self.events.setdefault(event.event_id, event)

    def wait_quiet(self, quiet: float = 1.0, timeout: float = 30.0) -> None:
        """Wait (at most ``timeout``) until nothing was traced for ``quiet`` seconds."""
        deadline = time.monotonic() + timeout
        seen = -1
        while time.monotonic() < deadline:
            with self._lock:
                count = sum(len(sent) for sent in self.publishes.values())
            if count == seen:
                return
            seen = count
            self._halt.wait(quiet)

    def snapshot(self) -> tuple[dict[str, LifecycleEvent], dict[str, list[Publish]]]:
        """(event_id -> event, event_id -> its publishes), as recorded so far."""
        with self._lock:
            return dict(self.events), {i: list(sent) for i, sent in self.publishes.items()}

    def stop(self) -> None:
        self._halt.set()
        self.join(10)
