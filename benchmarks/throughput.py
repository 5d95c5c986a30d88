"""Throughput of a burst of events to the broker and to a consumer; memory with events queued.

Usage: ``python benchmarks/throughput.py [--events N] [--paths ours,signed]`` (or
``tox -e bench``).

A benchmark, not a test: it prints msg/s for a burst of N events (default
20,000, after 200 uncounted warm-up events), path after path in one run,
against the RabbitMQ at 127.0.0.1:5672, each path on its own uniquely named
exchange and durable queue (deleted after):

1. **hypervisor-notifier**, in this process: what the service runs between
   the backend and the broker, :class:`SQLiteOutbox` (a file in a temporary
   directory) and :class:`Publisher` (durable topic exchange, persistent
   messages, its durable per-host queue, confirm window 256). Events are built
   first (``LifecycleEvent.from_observation``, seq from the service's
   :class:`SequenceCounter`); the clock starts at the first ``outbox.put``,
   which encodes the body and commits it, as the service does. Then the same
   with :class:`MemoryOutbox`: the difference is the SQLite file's cost. And
   with a SQLiteOutbox that signs each event (``[signing] key``), timed to
   a Subscriber that verifies each one: the difference is signing's cost.
2. **oslo.messaging Notifier** (driver ``messagingv2``, ``amqp_durable_queues
   = true``): ``Notifier.info`` of each event's payload, one thread. The
   Notifier declares the ``<topic>.info`` queue itself before its first
   publish (``_publish_and_creates_default_queue``), so every message is
   routed. What oslo waits for: its kombu connection has ``confirm_publish``
   set, so py-amqp's ``basic_publish_confirm`` waits for the broker's ack
   after every message (one round trip per message); ``mandatory`` is off for
   notifications (``direct_mandatory_flag`` only concerns RPC replies); and
   ``Notifier`` logs and swallows a send that failed.
3. **aio-pika**, raw: the same bodies, persistent, publisher confirms, at
   most 256 unconfirmed (asyncio tasks, a ``Semaphore(256)`` around
   ``exchange.publish``), durable topic exchange and queue.

Each path measures twice, on a fresh burst each time:

- **to broker**: no consumer attached; first send to the last broker
  confirm (ours: the N-th ``Publisher.observe_latency`` call, which follows
  the entries' deletion from the outbox; oslo: the N-th ``info`` returning).
  The queue must then hold N persistent messages (checked, with the size of
  one body), and is purged.
- **to consumer**: a consumer attached first (ours: a
  :class:`hypervisor_notifier.consumer.Subscriber` on the per-host queue;
  oslo: a notification listener, ``threading`` executor), in this process;
  first send to the N-th callback. The confirm rate of that burst is shown
  too: the consumer competes for the GIL and the 2 cores.

Finally, the resident memory of the real service process
(``python -m hypervisor_notifier.cmd.notifier``; a broker that refuses
connections, so nothing drains; libvirt's test driver inside the service,
``test:///default``, rather than the daemon's ``test+unix:///default``, whose
guests other processes define). Started on an empty outbox, then on an
outbox file left with 10,000 events (written by :class:`SQLiteOutbox`
itself, for 500 guests). ``VmRSS`` is read once the service logged its
start-up resync and its first failed broker connection (and, for the
second, that it loaded the 10,000 events). That resync reports the left
events' guests stopped (they are on no hypervisor): it queues one event more
for each, counted in the bytes per event.

The figures are only as good as the machine was quiet: while each path runs,
an idle connection notices a broker restart or alarm, and ``/proc`` tells the
CPU time of this process, of RabbitMQ and of everything else. Each of those
that happened is printed as a WARNING.

Goals: hypervisor-notifier (SQLite outbox, to broker confirm) at least 6 x
the oslo Notifier and at least 80 % of raw aio-pika, both in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import datetime
import importlib.metadata
import os
import platform
import re
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import aio_pika
import amqp
import oslo_messaging
from common import (
    BROKER,
    TRANSPORT_URL,
    delete_broker_objects,
    progress,
    rabbitmq_version,
    running,
    tail,
)
from oslo_config import cfg

from hypervisor_notifier import wire
from hypervisor_notifier.consumer import Subscriber
from hypervisor_notifier.events import LifecycleEvent, Observation, PowerState, Transition
from hypervisor_notifier.notifier.outbox import MemoryOutbox, Outbox
from hypervisor_notifier.notifier.outbox_sqlite import SQLiteOutbox
from hypervisor_notifier.notifier.publisher import Publisher
from hypervisor_notifier.notifier.service import SequenceCounter
from hypervisor_notifier.signing import Signer, Verifier
from hypervisor_notifier.transport_url import TransportURL

AIO_PIKA_URL = "amqp://guest:guest@127.0.0.1:5672/"
#: Nothing listens on port 1: the service's publisher is refused and retries.
UNREACHABLE_URL = "rabbit://guest:guest@127.0.0.1:1/"
#: libvirt's test driver in the service's own process: no other process's guests
#: (the daemon's test+unix:///default is shared) get into its start-up resync.
#: That driver has no keepalive: the service's must be off.
LIBVIRT_URI = "test:///default"
TOPIC = "hypervisor_events"

DEFAULT_EVENTS = 20_000
WARMUP = 200
INSTANCES = 500
CONFIRM_WINDOW = 256
QUEUED = 10_000
BURST_TIMEOUT = 120.0
READY_TIMEOUT = 30.0
LOG_POLL = 0.05

#: CPU other processes may use during a path (cores, on average) before it is suspect.
OTHERS_MAX_CORES = 0.25

GOAL_VS_OSLO = 6.0
GOAL_VS_RAW = 0.80
#: The paths, in the order they run: raw first, oslo (the slowest) last.
LABELS = {
    "raw": "aio-pika, 256 unconfirmed (raw)",
    "ours": "hypervisor-notifier, SQLiteOutbox",
    "memory": "hypervisor-notifier, MemoryOutbox",
    "signed": "hypervisor-notifier, SQLite, signed",
    "oslo": "oslo.messaging Notifier",
}
#: The signing key of the "signed" path (HMAC-SHA256; the Subscriber verifies).
SIGNING_KEY = b"throughput-benchmark-signing-key"
ANCHORS = {"raw": "anchor ~8,100 msg/s (issue)", "oslo": "anchor ~1,400 msg/s (issue)"}


# -- events ---------------------------------------------------------------------


class EventMaker:
    """Events of one host as the service stamps them: paused/resumed over INSTANCES guests."""

    def __init__(self, host: str) -> None:
        self.host = host
        self.sequence = SequenceCounter()
        self.guests = [(str(uuid.uuid4()), f"instance-{index:08x}") for index in range(INSTANCES)]
        self.made = 0

    def make(self, count: int) -> list[LifecycleEvent]:
        return [self._event(datetime.datetime.now(datetime.timezone.utc)) for _ in range(count)]

    def _event(self, now: datetime.datetime) -> LifecycleEvent:
        instance_uuid, name = self.guests[self.made % INSTANCES]
        paused = (self.made // INSTANCES) % 2 == 0
        self.made += 1
        observation = Observation(
            instance_uuid=instance_uuid,
            instance_name=name,
            transition=Transition.PAUSED if paused else Transition.RESUMED,
            power_state=PowerState.PAUSED if paused else PowerState.RUNNING,
            reason="SUSPENDED" if paused else "RESUMED",
            detail="PAUSED" if paused else "UNPAUSED",
            occurred_at=now,
        )
        return LifecycleEvent.from_observation(
            observation, host=self.host, hypervisor="libvirt", seq=self.sequence.next()
        )


class Countdown:
    """A callback counting its calls (any thread); notes when the target-th came."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.count = 0
        self.done_at = 0.0
        self._done = threading.Event()
        self._lock = threading.Lock()

    def __call__(self, *_args: object) -> None:
        with self._lock:
            self.count += 1
            if self.count == self.target:
                self.done_at = time.perf_counter()
                self._done.set()

    def wait(self, what: str) -> float:
        """The ``perf_counter`` time of the target-th call (BURST_TIMEOUT at most)."""
        if not self._done.wait(BURST_TIMEOUT):
            raise RuntimeError(f"{what}: {self.count} of {self.target} in {BURST_TIMEOUT:g} s")
        return self.done_at


# -- what a path measured -------------------------------------------------------


@dataclasses.dataclass
class Result:
    """Seconds for N events: to broker (no consumer), and with a consumer attached."""

    to_broker: float
    queued: QueueCheck
    to_consumer: float | None = None
    to_broker_with_consumer: float | None = None
    #: What else the path saw; ``problems``: what makes its figures suspect.
    notes: list[str] = dataclasses.field(default_factory=list)
    problems: list[str] = dataclasses.field(default_factory=list)

    def check(self, ok: bool, problem: str) -> None:
        if not ok:
            self.problems.append(problem)


@dataclasses.dataclass(frozen=True)
class QueueCheck:
    """What the broker held after a burst without consumer."""

    messages: int
    body_bytes: int
    persistent: bool


def after_burst(seconds: float, queue: str, count: int) -> Result:
    """A burst's result; the queue must hold ``count`` persistent messages (then emptied)."""
    queued = check_and_purge(queue)
    result = Result(seconds, queued)
    result.check(queued.messages == count, f"{queued.messages:,} messages queued, not {count:,}")
    result.check(queued.persistent, "messages not persistent")
    return result


def check_and_purge(queue: str) -> QueueCheck:
    """Count the queue's messages, look at one, then empty it for the next burst."""
    with amqp.Connection(**BROKER) as connection, connection.channel() as channel:
        _, messages, _ = channel.queue_declare(queue, passive=True)
        message = channel.basic_get(queue, no_ack=True)
        channel.queue_purge(queue)
    if message is None:
        return QueueCheck(messages, 0, persistent=False)
    # py-amqp decodes the body when the message names a content encoding.
    body = message.body.encode() if isinstance(message.body, str) else message.body
    return QueueCheck(messages, len(body), message.properties.get("delivery_mode") == 2)


def purge(queue: str) -> None:
    with amqp.Connection(**BROKER) as connection, connection.channel() as channel:
        channel.queue_purge(queue)


# -- what else happened meanwhile ----------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Cpu:
    """CPU seconds since boot: the whole machine busy, this process, the broker."""

    wall: float
    busy: float
    ours: float
    broker: float

    @classmethod
    def now(cls, broker_pids: list[int]) -> Cpu:
        ticks = os.sysconf("SC_CLK_TCK")
        # /proc/stat "cpu": user nice system idle iowait irq softirq steal ...
        fields = [int(value) for value in Path("/proc/stat").read_text().split()[1:9]]
        busy = sum(fields) - fields[3] - fields[4]
        own = os.times()
        broker = 0
        for pid in broker_pids:
            # /proc/<pid>/stat: utime and stime are fields 14 and 15 (after "(comm)").
            with contextlib.suppress(OSError):
                stat = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
                broker += int(stat[11]) + int(stat[12])
        return cls(time.monotonic(), busy / ticks, own.user + own.system, broker / ticks)


def broker_pids() -> list[int]:
    """The RabbitMQ node's processes (Erlang's ``beam.smp``) on this machine."""
    pids = []
    for comm in Path("/proc").glob("[0-9]*/comm"):
        with contextlib.suppress(OSError):
            if comm.read_text().strip() == "beam.smp":
                pids.append(int(comm.parent.name))
    return pids


class Watch:
    """Notices what would make a path's figures wrong: a broker restart or alarm, busy neighbours.

    A connection of its own stays open, idle, while the path runs: a broker
    that was restarted closed it, one that raised a memory or disk alarm told
    it ``connection.blocked``. CPU time is split between this process, the
    broker, and everything else.
    """

    def __init__(self) -> None:
        self.events: list[str] = []
        self._pids = broker_pids()
        self._connection = amqp.Connection(
            **BROKER,
            on_blocked=lambda reason: self.events.append(f"broker blocked publishers ({reason})"),
        )
        self._connection.connect()
        self._start = Cpu.now(self._pids)

    def finish(self, result: Result) -> None:
        """Record the CPU split in ``result``, and anything that disturbed the path."""
        end = Cpu.now(self._pids)
        wall = end.wall - self._start.wall
        ours, broker = end.ours - self._start.ours, end.broker - self._start.broker
        others = max(0.0, end.busy - self._start.busy - ours - broker)
        result.notes.append(
            f"CPU over the path's {wall:.1f} s: this process {ours:.1f} s, RabbitMQ "
            f"{broker:.1f} s, other processes {others:.1f} s"
        )
        result.check(
            others <= OTHERS_MAX_CORES * wall,
            f"other processes used {others / wall:.2f} cores meanwhile",
        )
        try:
            with contextlib.suppress(TimeoutError):
                while True:
                    self._connection.drain_events(timeout=0)
            self._connection.channel().close()
            self._connection.close()
        except (OSError, amqp.exceptions.AMQPError) as exc:
            self.events.append(f"broker connection lost (restarted?): {exc!r}")
            self._connection.collect()
        result.problems += self.events
        if not self._pids:
            result.problems.append("no beam.smp process found: RabbitMQ CPU not counted")


# -- 1. hypervisor-notifier -----------------------------------------------------


def measure_ours(run_id: str, label: str, outbox: Outbox, count: int) -> Result:
    """Outbox + Publisher in this process: a burst to broker, then one to a Subscriber.

    With an outbox that signs, the Subscriber verifies every event.
    """
    host = f"tbench-{run_id}-{label}"
    exchange = f"tbench_hn_{run_id}_{label}"
    queue = wire.host_queue_name(TOPIC, host)
    publisher = Publisher(
        outbox,
        url=TransportURL.parse(TRANSPORT_URL),
        host=host,
        exchange=exchange,
        topic=TOPIC,
        confirm_window=CONFIRM_WINDOW,
    )
    events = EventMaker(host)
    subscriber = None
    try:
        publisher.start()
        put_burst(outbox, publisher, events.make(WARMUP))  # connected, declared
        purge(queue)
        puts, confirms = put_burst(outbox, publisher, events.make(count))
        result = after_burst(confirms, queue, count)
        result.notes.append(f"puts alone {count / puts:,.0f}/s")
        received = Countdown(count)
        verifier = Verifier({"1": SIGNING_KEY}) if outbox.signer else None
        subscriber = Subscriber(TRANSPORT_URL, received, host=host, exchange=exchange, topic=TOPIC,
                                verifier=verifier)  # fmt: skip
        subscriber.start()
        if not subscriber.wait_ready(READY_TIMEOUT):
            raise RuntimeError("the Subscriber did not get ready")
        started = time.perf_counter()
        _, result.to_broker_with_consumer = put_burst(outbox, publisher, events.make(count))
        result.to_consumer = received.wait("Subscriber callbacks") - started
        stats = subscriber.stats
        result.check(not len(outbox) and outbox.problem is None, f"outbox: {outbox.problem}")
        result.check(not publisher.resent, f"{publisher.resent} sent again (broker lost?)")
        result.check(
            stats.delivered == count and stats.received == count,
            f"Subscriber received {stats.received:,}, delivered {stats.delivered:,}",
        )
    finally:
        if subscriber is not None:
            subscriber.stop()
        publisher.stop(timeout=5.0)
        outbox.close()
        delete_broker_objects(exchanges=[exchange], queues=[queue])
    return result


def put_burst(
    outbox: Outbox, publisher: Publisher, events: list[LifecycleEvent]
) -> tuple[float, float]:
    """Put every event, as the service's backend thread does.

    Returns the seconds to the last put returning, and to the last confirm.
    """
    confirmed = Countdown(len(events))
    publisher.observe_latency = confirmed
    started = time.perf_counter()
    for event in events:
        outbox.put(event)
    puts = time.perf_counter() - started
    return puts, confirmed.wait("broker confirms") - started


def measure_sqlite(run_id: str, workdir: Path, count: int, *, signed: bool = False) -> Result:
    """:func:`measure_ours` with a SQLiteOutbox (signing); then check its file is empty again."""
    path = str(workdir / f"outbox-{signed}.sqlite")
    signer = Signer("1", SIGNING_KEY) if signed else None
    label = "signed" if signed else "sqlite"
    result = measure_ours(run_id, label, SQLiteOutbox(path, signer=signer), count)
    rows = rows_left(path)
    result.check(not rows, f"{rows} rows left in the SQLite file")
    return result


def rows_left(path: str) -> int:
    with sqlite3.connect(path) as db:
        return db.execute("SELECT COUNT(*) FROM events").fetchone()[0]


# -- 2. oslo.messaging Notifier -------------------------------------------------


class OsloEndpoint:
    """Notification endpoint: counts INFO notifications."""

    def __init__(self, received: Countdown) -> None:
        self.received = received

    def info(
        self, _ctxt: dict, _publisher_id: str, _event_type: str, _payload: dict, _meta: dict
    ) -> None:
        self.received()


def oslo_conf(path: Path, exchange: str) -> cfg.ConfigOpts:
    """A config file as an oslo.messaging user writes it: durable queues, our exchange."""
    path.write_text(
        f"[DEFAULT]\ncontrol_exchange = {exchange}\n\n"
        "[oslo_messaging_rabbit]\namqp_durable_queues = true\n"
    )
    conf = cfg.ConfigOpts()
    conf([], default_config_files=[str(path)])
    return conf


def measure_oslo(run_id: str, workdir: Path, count: int) -> Result:
    """``Notifier.info`` from one thread: a burst to broker, then one to a listener."""
    host = f"tbench-{run_id}-oslo"
    topic = f"tbench_{run_id}"
    exchange = f"tbench_oslo_{run_id}"
    queue = f"{topic}.info"
    transport = oslo_messaging.get_notification_transport(
        oslo_conf(workdir / "oslo.conf", exchange), url=TRANSPORT_URL
    )
    notifier = oslo_messaging.Notifier(
        transport,
        driver="messagingv2",
        topics=[topic],
        publisher_id=wire.PUBLISHER_PREFIX + host,
    )
    events = EventMaker(host)
    listener = None
    try:
        notify_burst(notifier, events.make(WARMUP))  # connects, declares <topic>.info
        purge(queue)
        result = after_burst(notify_burst(notifier, events.make(count)), queue, count)
        result.notes.append(f"what info() waits for: {oslo_waits_for(transport)}")
        received = Countdown(count)
        target = oslo_messaging.Target(topic=topic, exchange=exchange)
        listener = oslo_messaging.get_notification_listener(
            transport, [target], [OsloEndpoint(received)], executor="threading"
        )
        listener.start()
        started = time.perf_counter()
        result.to_broker_with_consumer = notify_burst(notifier, events.make(count))
        result.to_consumer = received.wait("notification listener") - started
        result.notes.append(f"listener received {received.count:,}")
    finally:
        if listener is not None:
            listener.stop()
            listener.wait()
        transport.cleanup()
        delete_broker_objects(exchanges=[exchange], queues=[queue])
    return result


def oslo_waits_for(transport: oslo_messaging.Transport) -> str:
    """Look at the Notifier's pooled connection (oslo's internals: may not be reachable)."""
    try:
        pool = transport._driver._connection_pool._items
        connection = next(item for entry in pool for item in entry if hasattr(item, "channel"))
        confirm = connection.connection.transport_options.get("confirm_publish")
        channel = connection.channel
        waits = channel.basic_publish == channel.basic_publish_confirm
    except (AttributeError, StopIteration) as exc:
        return f"not inspectable ({exc!r})"
    return (
        f"kombu confirm_publish={confirm}; py-amqp basic_publish is basic_publish_confirm "
        f"(waits for that message's ack): {waits}"
    )


def notify_burst(notifier: oslo_messaging.Notifier, events: list[LifecycleEvent]) -> float:
    """``info`` each event's payload; seconds until the last call returned (= was confirmed)."""
    messages = [(wire.EVENT_TYPE_PREFIX + e.transition.value, e.to_payload()) for e in events]
    started = time.perf_counter()
    for event_type, payload in messages:
        notifier.info({}, event_type, payload)
    return time.perf_counter() - started


# -- 3. raw aio-pika --------------------------------------------------------------


def measure_raw(run_id: str, count: int) -> Result:
    """aio-pika, 256 unconfirmed at most: the same bodies, to broker confirm."""
    host = f"tbench-{run_id}-raw"
    exchange = f"tbench_raw_{run_id}"
    queue = wire.host_queue_name(TOPIC, host)
    events = EventMaker(host)
    warmup = [wire.encode(event) for event in events.make(WARMUP)]
    bodies = [wire.encode(event) for event in events.make(count)]
    try:
        seconds = asyncio.run(
            raw_bursts(exchange, queue, wire.routing_key(TOPIC, host), warmup, bodies)
        )
        return after_burst(seconds, queue, count)
    finally:
        delete_broker_objects(exchanges=[exchange], queues=[queue])


async def raw_bursts(
    exchange_name: str, queue_name: str, key: str, warmup: list[bytes], bodies: list[bytes]
) -> float:
    """Declare, publish the warm-up (then purge it), time the burst to its last confirm."""
    connection = await aio_pika.connect(AIO_PIKA_URL)
    try:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.declare_exchange(
            exchange_name, aio_pika.ExchangeType.TOPIC, durable=True
        )
        queue = await channel.declare_queue(queue_name, durable=True)
        await queue.bind(exchange, key)
        window = asyncio.Semaphore(CONFIRM_WINDOW)

        async def publish(body: bytes) -> None:
            message = aio_pika.Message(
                body,
                content_type=wire.CONTENT_TYPE,
                content_encoding="utf-8",
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                message_id=str(uuid.uuid4()),
            )
            async with window:
                await exchange.publish(message, routing_key=key)

        await asyncio.gather(*(publish(body) for body in warmup))
        await queue.purge()
        started = time.perf_counter()
        await asyncio.gather(*(publish(body) for body in bodies))
        return time.perf_counter() - started
    finally:
        await connection.close()


# -- 4. resident memory of the service ------------------------------------------


@dataclasses.dataclass(frozen=True)
class Memory:
    """The service process's memory, once started."""

    rss_kib: int
    hwm_kib: int
    outbox_bytes: int
    #: Events its start-up resync put in the outbox.
    resynced: int


def measure_memory(run_id: str, workdir: Path, queued: int) -> Memory:
    """Start the service on an outbox holding ``queued`` events; read its VmRSS; stop it."""
    host = f"tbench-{run_id}-rss"
    directory = workdir / f"rss-{queued}"
    directory.mkdir()
    outbox_path = directory / "outbox.sqlite"
    if queued:
        leave_events(outbox_path, host, queued)
    outbox_bytes = outbox_path.stat().st_size if queued else 0
    conf = directory / "notifier.conf"
    conf.write_text(
        f"[DEFAULT]\nhost = {host}\nshutdown_timeout = 1\n\n"
        f"[libvirt]\nconnection_uri = {LIBVIRT_URI}\nkeepalive_interval = 0\n\n"
        f"[publisher]\ntransport_url = {UNREACHABLE_URL}\nexchange = tbench_rss_{run_id}\n\n"
        f"[outbox]\npath = {outbox_path}\n\n"
        "[health]\nport = 0\n"
    )
    argv = [sys.executable, "-m", "hypervisor_notifier.cmd.notifier", "--config-file", str(conf)]
    log_path = directory / "notifier.log"
    expected = ["cannot publish to broker", "resync ("]
    if queued:
        expected.append(f"{queued} events from the previous run")
    with running(f"service ({queued:,} events queued)", argv, log_path) as process:
        lines = wait_for_log(process, log_path, expected)
        status = proc_status(process.pid)
    changes = re.search(r"(\d+) changes published", lines["resync ("])
    if changes is None:
        raise RuntimeError(f"unexpected resync log line: {lines['resync (']}")
    return Memory(status["VmRSS"], status["VmHWM"], outbox_bytes, int(changes.group(1)))


def leave_events(path: Path, host: str, count: int) -> None:
    """An outbox file as a run that could not reach the broker leaves it."""
    outbox = SQLiteOutbox(str(path))
    events = EventMaker(host)
    try:
        for event in events.make(count):
            outbox.put(event)
    finally:
        outbox.close()
    if rows_left(str(path)) != count:
        raise RuntimeError(f"the outbox file holds {rows_left(str(path))} events, not {count}")


def wait_for_log(
    process: subprocess.Popen[str], log_path: Path, expected: list[str]
) -> dict[str, str]:
    """Wait until the log has a line containing each of ``expected``; return those lines.

    Polls the log file (a child's stderr offers nothing else to wait on).
    """
    deadline = time.monotonic() + READY_TIMEOUT
    while True:
        log = log_path.read_text(errors="replace").splitlines()
        found = {text: next((line for line in log if text in line), "") for text in expected}
        if all(found.values()):
            return found
        if process.poll() is not None or time.monotonic() > deadline:
            missing = [text for text, line in found.items() if not line]
            raise RuntimeError(f"service log lacks {missing}:\n{tail(log_path)}")
        time.sleep(LOG_POLL)


def proc_status(pid: int) -> dict[str, int]:
    """The ``kB`` fields of /proc/<pid>/status (VmRSS, VmHWM...), in KiB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if value.strip().endswith(" kB"):
            fields[name] = int(value.split()[0])
    return fields


# -- report -----------------------------------------------------------------------


def rate(count: int, seconds: float | None, width: int = 11) -> str:
    return f"{count / seconds:>{width},.0f}" if seconds else f"{'-':>{width}}"


def report(count: int, results: dict[str, Result], memory: dict[int, Memory]) -> list[str]:
    sizes = sorted({result.queued.body_bytes for result in results.values()})
    lines = [
        f"burst of N={count:,} events (+{WARMUP} warm-up), bodies of "
        f"{'/'.join(map(str, sizes))} bytes, msg/s:",
        f"{'path':<36}{'to broker':>11}{'to consumer':>13}{'confirms*':>11}  anchor",
    ]
    for key, result in results.items():
        lines.append(
            f"{LABELS[key]:<36}{rate(count, result.to_broker)}"
            f"{rate(count, result.to_consumer, 13)}{rate(count, result.to_broker_with_consumer)}"
            f"  {ANCHORS.get(key, '')}".rstrip()
        )
    to_broker = {key: count / result.to_broker for key, result in results.items()}
    disturbed = any(result.problems for result in results.values())
    suffix = " (figures suspect: see WARNING)" if disturbed else ""
    lines.append(
        "  confirms*: the confirm rate of the burst timed to the consumer (consumer in this"
        " process)"
    )
    ours = to_broker.get("ours")
    if ours and "oslo" in to_broker:
        oslo = to_broker["oslo"]
        lines.append(
            f"goal: hypervisor-notifier (SQLiteOutbox, to broker) >= {GOAL_VS_OSLO:g}x oslo"
            f" Notifier: {ours / oslo:.1f}x: {verdict(ours >= GOAL_VS_OSLO * oslo)}{suffix}"
        )
    if ours and "raw" in to_broker:
        raw = to_broker["raw"]
        lines.append(
            f"goal: hypervisor-notifier (SQLiteOutbox, to broker) >= {GOAL_VS_RAW:.0%} of raw"
            f" aio-pika: {ours / raw:.0%}: {verdict(ours >= GOAL_VS_RAW * raw)}{suffix}"
        )
    if ours and "memory" in to_broker:
        lines.append(
            f"SQLite file's cost: {ours:,.0f} vs {to_broker['memory']:,.0f} msg/s"
            " with MemoryOutbox"
        )
    if ours and "signed" in to_broker:
        signed = count / results["signed"].to_consumer
        lines.append(
            f"signing's cost: {to_broker['signed']:,.0f} vs {ours:,.0f} msg/s to broker, "
            f"{signed:,.0f} vs {count / results['ours'].to_consumer:,.0f} to a verifying consumer"
        )
    lines.append(
        "checks: every burst without consumer left N persistent messages queued: "
        + ("yes" if not disturbed else "see WARNING")
    )
    for key, result in results.items():
        lines += [f"  {LABELS[key]}: {note}" for note in result.notes]
        lines += [f"  WARNING {LABELS[key]}: {problem}" for problem in result.problems]
    return lines + (memory_report(memory) if memory else [])


def memory_report(memory: dict[int, Memory]) -> list[str]:
    empty, full = memory[0], memory[QUEUED]
    growth = (full.rss_kib - empty.rss_kib) * 1024
    events = QUEUED + full.resynced - empty.resynced
    lines = [
        f"service process (real; libvirt {LIBVIRT_URI}, broker unreachable), once started:",
        f"  {'empty outbox':<24}VmRSS {mib(empty.rss_kib)} (VmHWM {mib(empty.hwm_kib)});"
        f" its start-up resync queued {empty.resynced}",
        f"  {f'{QUEUED:,} events left':<24}VmRSS {mib(full.rss_kib)} (VmHWM {mib(full.hwm_kib)});"
        f" its start-up resync queued {full.resynced} more",
        f"  {'difference':<24}      {growth / 2**20:+.1f} MiB for {events:,} events ="
        f" {growth / events:,.0f} bytes/event (outbox file {full.outbox_bytes / 2**20:.1f} MiB)",
    ]
    if full.resynced:
        lines.append(
            f"  (the {full.resynced} more: the left events' {INSTANCES} guests are on no"
            " hypervisor: the resync reports each stopped)"
        )
    return lines


def mib(kib: int) -> str:
    return f"{kib / 1024:.1f} MiB"


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def machine(workdir: Path) -> list[str]:
    cpu = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
         if line.startswith("model name")),
        "?",
    )  # fmt: skip
    versions = ", ".join(
        f"{name} {importlib.metadata.version(name)}"
        for name in ("amqp", "kombu", "oslo.messaging", "aio-pika", "aiormq")
    )
    load = " ".join(f"{value:.2f}" for value in os.getloadavg())
    return [
        f"machine: nproc {len(os.sched_getaffinity(0))} ({cpu}), {platform.machine()}, "
        f"Linux {platform.release()}, load average {load}",
        f"python {platform.python_version()}, sqlite {sqlite3.sqlite_version}; RabbitMQ "
        f"{rabbitmq_version()} at 127.0.0.1:5672; {versions}",
        f"outbox files in {workdir} ({filesystem(workdir)}); package: {package_state()}",
    ]


def package_state() -> str:
    """The commit of the package measured, and which of its files differ from it."""
    repo = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str:
        run = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True)
        return run.stdout.rstrip() if run.returncode == 0 else ""

    commit = git("rev-parse", "--short", "HEAD") or "not a git checkout"
    changed = git("status", "--porcelain", "--", "hypervisor_notifier").splitlines()
    if not changed:
        return f"hypervisor_notifier at {commit}"
    names = ", ".join(line[3:].removeprefix("hypervisor_notifier/") for line in changed)
    return f"hypervisor_notifier at {commit} + uncommitted changes to {names}"


def filesystem(path: Path) -> str:
    """The type of the file system holding ``path`` (longest mount point that contains it)."""
    mounts = [line.split()[1:3] for line in Path("/proc/mounts").read_text().splitlines()]
    text = str(path.resolve())
    best = max(
        (
            mount
            for mount in mounts
            if text == mount[0] or text.startswith(mount[0].rstrip("/") + "/")
        ),
        key=lambda mount: len(mount[0]),
    )
    return f"{best[1]} on {best[0]}"


# -- the run ----------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--events", type=int, default=DEFAULT_EVENTS, help="events per burst (default 20000)"
    )
    parser.add_argument(
        "--paths",
        default=",".join(LABELS),
        help=f"comma-separated paths to measure (default: all: {','.join(LABELS)}); "
        "the service's memory is measured only with all",
    )
    args = parser.parse_args(argv)
    if args.events < 1:
        parser.error("--events must be at least 1")
    args.paths = args.paths.split(",")
    if unknown := set(args.paths) - set(LABELS):
        parser.error(f"unknown paths: {', '.join(sorted(unknown))}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    run_id = uuid.uuid4().hex[:8]
    count = args.events
    results: dict[str, Result] = {}
    memory: dict[int, Memory] = {}
    with tempfile.TemporaryDirectory(prefix="hn-throughput-") as tmp:
        workdir = Path(tmp)
        header = machine(workdir)
        measures: dict[str, Callable[[], Result]] = {
            "raw": lambda: measure_raw(run_id, count),
            "ours": lambda: measure_sqlite(run_id, workdir, count),
            "memory": lambda: measure_ours(run_id, "memory", MemoryOutbox(), count),
            "signed": lambda: measure_sqlite(run_id, workdir, count, signed=True),
            "oslo": lambda: measure_oslo(run_id, workdir, count),
        }
        for key, label in LABELS.items():
            if key not in args.paths:
                continue
            progress(f"measuring {label}: {WARMUP} + 2 x {count:,} events")
            watch = Watch()
            results[key] = measures[key]()
            watch.finish(results[key])
        for queued in (0, QUEUED) if len(args.paths) == len(LABELS) else ():
            progress(f"measuring the service's memory with {queued:,} events queued")
            memory[queued] = measure_memory(run_id, workdir, queued)
    lines = [*header, *report(count, results, memory)]
    load = " ".join(f"{value:.2f}" for value in os.getloadavg())
    lines.append(f"whole run: {time.perf_counter() - started:.1f} s; load average at end {load}")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
