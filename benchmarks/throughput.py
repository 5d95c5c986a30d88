"""Throughput of a burst of events to the broker's confirm and to a consumer.

Usage: ``python benchmarks/throughput.py [--events N] [--paths ours,signed,...]
[--rounds R]`` (or ``tox -e bench``).

A benchmark, not a test: it prints msg/s for a burst of N events (default
20,000, after 200 uncounted warm-up events), path after path in one run,
against the RabbitMQ at 127.0.0.1:5672, each path on its own uniquely named
exchange and durable queue (deleted after):

1. **raw py-amqp** (``raw_amqp.py``), the ceiling: the same bodies, persistent,
   pipelined confirms with a window of 256, then of 1,024; nothing else. The
   signed path is compared with the same publisher sending the signed bodies
   (``raw-signed``): the same body size, as the goal says. ``raw-same``
   sends the service's very messages: the signed bodies with the wire
   contract's ``message_id`` and ``timestamp``, ``mandatory``: what is left
   between it and the service is the service's own cost.
2. **hypervisor-notifier**, in this process: what the service runs between
   the backend and the broker, :class:`SQLiteOutbox` (a file in a temporary
   directory) and :class:`Publisher` (durable topic exchange, persistent
   messages, its durable per-host queue, confirm window 256). Events are
   built first (``LifecycleEvent.from_observation``, seq from the service's
   :class:`SequenceCounter`); the clock starts at the first put, which
   encodes the body and commits it, as the service does. The events are put
   in batches of ``--batch`` (the backend's dispatch hands over what waits:
   1 is the old one-commit-per-event path). Then the same with
   :class:`MemoryOutbox` (the SQLite file's cost), and with a SQLiteOutbox
   that signs each event, timed to a Subscriber that verifies each one.
3. **oslo.messaging Notifier** (``oslo_notifier.py``): one confirm round trip
   per message.

Each path measures to broker (no consumer attached; first put to the N-th
confirm, then the queue must hold N persistent messages, checked and purged)
and, but the raw one, to consumer (a consumer attached first, in this
process; first send to the N-th callback; the confirm rate of that burst is
shown too: the consumer competes for the GIL and the 2 cores).

The figures are only as good as the machine was quiet: each path runs under
the harness's :class:`Watch`, which prints a WARNING for a broker restart or
alarm, or busy neighbours. With ``--rounds R`` the paths run R times,
alternating (A B C, C B A, ...) so a drift of the machine weighs on each
alike; the figures are the medians, and each goal's share is the median of
its rounds' shares, with their range. The service's memory is ``memory.py``.

Goals (issue): signed hypervisor-notifier at least 0.9 x raw py-amqp with the
same window (256) and body size, and at least 6 x the oslo Notifier, both in
the same run.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import raw_amqp
from bursts import EventMaker, Result, after_burst, purge, rate
from harness import (
    TRANSPORT_URL,
    Countdown,
    Watch,
    delete_broker_objects,
    filesystem,
    machine_line,
    package_state,
    progress,
    rabbitmq_version,
    verdict,
    versions,
)
from oslo_notifier import measure_oslo

from hypervisor_notifier import wire
from hypervisor_notifier.consumer import Subscriber
from hypervisor_notifier.events import LifecycleEvent
from hypervisor_notifier.notifier.outbox import MemoryOutbox, Outbox
from hypervisor_notifier.notifier.outbox_sqlite import SQLiteOutbox
from hypervisor_notifier.notifier.publisher import Publisher
from hypervisor_notifier.signing import Signer, Verifier
from hypervisor_notifier.tls import BrokerAccess
from hypervisor_notifier.transport_url import TransportURL

TOPIC = "hypervisor_events"
DEFAULT_EVENTS = 20_000
DEFAULT_BATCH = 64
WARMUP = 200
CONFIRM_WINDOW = 256
READY_TIMEOUT = 30.0

GOAL_VS_OSLO = 6.0
GOAL_VS_RAW = 0.90
#: The paths, in the order they run: the ceiling first, oslo (the slowest) last.
LABELS = {
    "raw": f"raw py-amqp, window {CONFIRM_WINDOW}",
    "raw1024": "raw py-amqp, window 1024",
    "raw-signed": f"raw py-amqp, window {CONFIRM_WINDOW}, signed",
    "raw-same": "raw py-amqp, the service's messages",
    "ours": "hypervisor-notifier, SQLiteOutbox",
    "memory": "hypervisor-notifier, MemoryOutbox",
    "signed": "hypervisor-notifier, SQLite, signed",
    "oslo": "oslo.messaging Notifier",
}
#: Each path's goal: the raw path it is held against (same window, same body size).
CEILINGS = {"ours": "raw", "signed": "raw-signed"}
#: Not a goal: the signed path beside a raw publisher sending the very same messages.
SAME_MESSAGES = ("signed", "raw-same")
#: The signing key of the "signed" path (HMAC-SHA256; the Subscriber verifies).
SIGNING_KEY = b"throughput-benchmark-signing-key"
ANCHORS = {
    "raw": "anchor ~9,600 msg/s (issue)",
    "raw1024": "anchor ~12,000 msg/s (issue)",
    "raw-signed": "the signed path's bodies",
    "raw-same": "signed bodies, message_id, timestamp, mandatory",
    "ours": "anchor ~0.5 x raw (issue)",
    "signed": "anchor 0.44-0.5 x raw (issue)",
    "oslo": "anchor ~1,400 msg/s",
}


# -- 1. raw py-amqp -----------------------------------------------------------------


def measure_raw(
    run_id: str, count: int, window: int, signer: Signer | None = None, *, same: bool = False
) -> Result:
    """The ceiling: the same bodies (signed by ``signer``), ``window`` unconfirmed at most.

    ``same``: with the properties and the ``mandatory`` flag the service sends.
    """
    name = f"{run_id}-raw{window}{'s' if signer else ''}{'m' if same else ''}"
    host, exchange = f"tbench-{name}", f"tbench_{name}"
    queue = wire.host_queue_name(TOPIC, host)
    key = wire.routing_key(TOPIC, host)
    events = EventMaker(host)

    def messages(made: list[LifecycleEvent]) -> tuple[list[bytes], list[dict[str, object]]]:
        """The bodies, and each message's properties when the service's are sent."""
        properties = [
            {"message_id": e.event_id, "timestamp": int(e.occurred_at.timestamp())} for e in made
        ]
        return [wire.encode(event, signer) for event in made], properties if same else []

    warmup, warmup_properties = messages(events.make(WARMUP))
    bodies, properties = messages(events.make(count))
    try:
        raw_amqp.burst(exchange, queue, key, warmup, window, warmup_properties, mandatory=same)
        purge(queue)
        seconds = raw_amqp.burst(exchange, queue, key, bodies, window, properties, mandatory=same)
        return after_burst(seconds, queue, count)
    finally:
        delete_broker_objects(exchanges=[exchange], queues=[queue])


# -- 2. hypervisor-notifier -------------------------------------------------------


def measure_ours(run_id: str, label: str, outbox: Outbox, count: int, batch: int) -> Result:
    """Outbox + Publisher in this process: a burst to broker, then one to a Subscriber.

    With an outbox that signs, the Subscriber verifies every event.
    """
    host = f"tbench-{run_id}-{label}"
    exchange = f"tbench_hn_{run_id}_{label}"
    queue = wire.host_queue_name(TOPIC, host)
    publisher = Publisher(
        outbox,
        access=BrokerAccess(TransportURL.parse(TRANSPORT_URL)),
        host=host,
        topology=wire.Topology(exchange, TOPIC),
        confirm_window=CONFIRM_WINDOW,
    )
    events = EventMaker(host)
    subscriber = None
    try:
        publisher.start()
        put_burst(outbox, publisher, events.make(WARMUP), batch)  # connected, declared
        purge(queue)
        puts, confirms = put_burst(outbox, publisher, events.make(count), batch)
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
        _, result.to_broker_with_consumer = put_burst(outbox, publisher, events.make(count), batch)
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
    outbox: Outbox, publisher: Publisher, events: list[LifecycleEvent], batch: int
) -> tuple[float, float]:
    """Put every event in batches of ``batch``, as the service's dispatch does.

    Returns the seconds to the last put returning, and to the last confirm.
    """
    confirmed = Countdown(len(events))
    publisher.observe_latency = confirmed
    started = time.perf_counter()
    if batch == 1 or not hasattr(outbox, "put_many"):
        for event in events:
            outbox.put(event)
    else:
        for start in range(0, len(events), batch):
            outbox.put_many(events[start : start + batch])
    puts = time.perf_counter() - started
    return puts, confirmed.wait("broker confirms") - started


def measure_sqlite(
    run_id: str, workdir: Path, count: int, batch: int, *, signed: bool = False
) -> Result:
    """:func:`measure_ours` with a SQLiteOutbox (signing); then check its file is empty again."""
    path = str(workdir / f"outbox-{signed}-{uuid.uuid4().hex[:8]}.sqlite")
    signer = Signer("1", SIGNING_KEY) if signed else None
    label = "signed" if signed else "sqlite"
    result = measure_ours(run_id, label, SQLiteOutbox(path, signer=signer), count, batch)
    rows = rows_left(path)
    result.check(not rows, f"{rows} rows left in the SQLite file")
    return result


def rows_left(path: str) -> int:
    with sqlite3.connect(path) as db:
        return db.execute("SELECT COUNT(*) FROM events").fetchone()[0]


# -- report -----------------------------------------------------------------------


def report(count: int, batch: int, results: dict[str, list[Result]]) -> list[str]:
    """The figures of every path (medians of its rounds), then the goals and notes."""
    rounds = max(len(runs) for runs in results.values())
    sizes = sorted({run.queued.body_bytes for runs in results.values() for run in runs})
    lines = [
        f"burst of N={count:,} events (+{WARMUP} warm-up), bodies of "
        f"{'/'.join(map(str, sizes))} bytes, put in batches of {batch}, msg/s"
        + (f", medians of {rounds} rounds:" if rounds > 1 else ":"),
        f"{'path':<36}{'to broker':>11}{'to consumer':>13}{'confirms*':>11}  anchor",
    ]
    for key, runs in results.items():
        lines.append(
            f"{LABELS[key]:<36}{rate(count, median(runs, 'to_broker'))}"
            f"{rate(count, median(runs, 'to_consumer'), 13)}"
            f"{rate(count, median(runs, 'to_broker_with_consumer'))}"
            f"  {ANCHORS.get(key, '')}".rstrip()
        )
    lines.append("  confirms*: the confirm rate of the burst timed to the consumer")
    suspect = any(run.problems for runs in results.values() for run in runs)
    suffix = " (figures suspect: see WARNING)" if suspect else ""
    for key, ceiling in CEILINGS.items():
        if key in results and ceiling in results:
            shares = shares_of(results[key], results[ceiling])
            share = statistics.median(shares)
            spread = f" (rounds {min(shares):.0%}-{max(shares):.0%})" if len(shares) > 1 else ""
            lines.append(
                f"goal: {LABELS[key]} >= {GOAL_VS_RAW:.0%} of {LABELS[ceiling]}:"
                f" {share:.0%}{spread}: {verdict(share >= GOAL_VS_RAW)}{suffix}"
            )
    signed, same = SAME_MESSAGES
    if signed in results and same in results:
        share = statistics.median(shares_of(results[signed], results[same]))
        lines.append(
            f"(not a goal) {LABELS[signed]} vs {LABELS[same]}: {share:.0%}: the service's"
            " own cost, the broker's cost of the contract's properties set aside"
        )
    if "ours" in results and "oslo" in results:
        times = 1 / statistics.median(shares_of(results["oslo"], results["ours"]))
        lines.append(
            f"goal: {LABELS['ours']} >= {GOAL_VS_OSLO:g}x oslo Notifier: {times:.1f}x:"
            f" {verdict(times >= GOAL_VS_OSLO)}{suffix}"
        )
    if "ours" in results and "memory" in results:
        lines.append(
            f"SQLite file's cost: {rate(count, median(results['ours'], 'to_broker'), 0)} vs "
            f"{rate(count, median(results['memory'], 'to_broker'), 0)} msg/s with MemoryOutbox"
        )
    for key, runs in results.items():
        for run in runs:
            lines += [f"  {LABELS[key]}: {note}" for note in run.notes]
            lines += [f"  WARNING {LABELS[key]}: {problem}" for problem in run.problems]
    return lines


def median(runs: list[Result], field: str) -> float | None:
    """The median of a field of the runs (seconds), None if no run measured it."""
    values = [getattr(run, field) for run in runs if getattr(run, field) is not None]
    return statistics.median(values) if values else None


def shares_of(runs: list[Result], ceilings: list[Result]) -> list[float]:
    """Each round's rate of ``runs`` as a share of the same round's ``ceilings``."""
    return [ceiling.to_broker / run.to_broker for run, ceiling in zip(runs, ceilings, strict=True)]


# -- the run ----------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=DEFAULT_EVENTS, help="events per burst")
    parser.add_argument(
        "--batch",
        type=int,
        default=DEFAULT_BATCH,
        help="events put per outbox commit (the dispatch's batch; 1: one commit per event)",
    )
    parser.add_argument(
        "--rounds", type=int, default=1, help="times each path runs, alternating (default 1)"
    )
    parser.add_argument(
        "--paths",
        default=",".join(LABELS),
        help=f"comma-separated paths to measure (default: all: {','.join(LABELS)})",
    )
    args = parser.parse_args(argv)
    if args.events < 1 or args.batch < 1 or args.rounds < 1:
        parser.error("--events, --batch and --rounds must be at least 1")
    args.paths = args.paths.split(",")
    if unknown := set(args.paths) - set(LABELS):
        parser.error(f"unknown paths: {', '.join(sorted(unknown))}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    run_id = uuid.uuid4().hex[:8]
    count, batch = args.events, args.batch
    results: dict[str, list[Result]] = {}
    with tempfile.TemporaryDirectory(prefix="hn-throughput-") as tmp:
        workdir = Path(tmp)
        header = [
            machine_line(),
            f"sqlite {sqlite3.sqlite_version}; RabbitMQ {rabbitmq_version()} at 127.0.0.1:5672; "
            + versions("amqp", "kombu", "oslo.messaging"),
            f"outbox files in {workdir} ({filesystem(workdir)}); package: {package_state()}",
        ]
        measures: dict[str, Callable[[], Result]] = {
            "raw": lambda: measure_raw(run_id, count, CONFIRM_WINDOW),
            "raw1024": lambda: measure_raw(run_id, count, 1024),
            "raw-signed": lambda: measure_raw(
                run_id, count, CONFIRM_WINDOW, Signer("1", SIGNING_KEY)
            ),
            "raw-same": lambda: measure_raw(
                run_id, count, CONFIRM_WINDOW, Signer("1", SIGNING_KEY), same=True
            ),
            "ours": lambda: measure_sqlite(run_id, workdir, count, batch),
            "memory": lambda: measure_ours(run_id, "memory", MemoryOutbox(), count, batch),
            "signed": lambda: measure_sqlite(run_id, workdir, count, batch, signed=True),
            "oslo": lambda: measure_oslo(run_id, workdir, count),
        }
        paths = [key for key in LABELS if key in args.paths]
        for round_ in range(args.rounds):
            # Alternating (A B C, C B A): a drift of the machine weighs on each path alike.
            for key in paths if round_ % 2 == 0 else paths[::-1]:
                progress(f"round {round_ + 1}, {LABELS[key]}: {WARMUP} + {count:,} events")
                watch = Watch()
                result = measures[key]()
                note, problems = watch.finish()
                result.notes.append(note)
                result.problems += problems
                results.setdefault(key, []).append(result)
    lines = [*header, *report(count, batch, results)]
    load = " ".join(f"{value:.2f}" for value in os.getloadavg())
    lines.append(f"whole run: {time.perf_counter() - started:.1f} s; load average at end {load}")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
