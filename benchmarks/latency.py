"""Latency from a libvirt API call in another process to a subscriber's callback.

Usage: ``python benchmarks/latency.py [--events N] [--signed]`` (or ``tox -e bench``).
``--signed``: the service signs its events and the Subscriber verifies them.

A benchmark, not a test: it prints p50/p90/p99/max over N events (default
1000, after 20 uncounted warm-up events) for two paths, one after the other
in the same run, on the same domain of libvirt's test driver:

1. **hypervisor-notifier**: the real service (a subprocess) watching
   ``test+unix:///default``, and a :class:`hypervisor_notifier.consumer.Subscriber`
   on its per-host durable queue in this process.
2. **oslo.messaging Notifier**: ``oslo_forwarder.py`` (a subprocess), and an
   oslo.messaging notification listener (``threading`` executor) in this process.

A driver child process alternates ``dom.suspend()`` and ``dom.resume()``;
it stamps the time just before each call, and makes the next call only once
this process received the previous event, so events never queue behind each
other (latency, not throughput). Latency = callback time - call start; the
n-th event of the domain is matched with the n-th call, and its transition
(paused or resumed) checked against the call.

Clock: ``time.monotonic()`` in both processes. On Linux it is
``clock_gettime(CLOCK_MONOTONIC)``, one clock for the whole system, so stamps
taken in different processes can be subtracted (checked at start).
``time.perf_counter()`` is the same clock on Linux; ``monotonic`` says what
we rely on.

Paths run one after the other rather than at once: on a 2-core machine two
forwarders would compete for the CPUs, and the two consumers in this process
for the GIL, so each path would measure the other's interference. They take
turns in rounds (A B B A ...), so that a change of the machine's load during
the run weighs on both alike.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib.metadata
import os
import platform
import select
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import libvirt
import oslo_messaging
from harness import (
    TRANSPORT_URL,
    Stats,
    delete_broker_objects,
    progress,
    rabbitmq_version,
    running,
    service_argv,
    tail,
    write_conf,
)
from oslo_config import cfg
from paced_calls import WARMUP, Inbox, Run, measure, merge

from hypervisor_notifier import wire
from hypervisor_notifier.consumer import LifecycleEvent, Subscriber
from hypervisor_notifier.signing import Verifier

LIBVIRT_URI = "test+unix:///default"
# A guest launched by nova (its metadata): the service reports only those by default.
DOMAIN_XML = (
    "<domain type='test'><name>{name}</name><memory>8192</memory>"
    "<os><type>hvm</type></os><metadata>"
    "<nova:instance xmlns:nova='http://openstack.org/xmlns/libvirt/nova/1.1'/>"
    "</metadata></domain>"
)
FORWARDER = Path(__file__).with_name("oslo_forwarder.py")
HN_TOPIC = "hypervisor_events"

READY_TIMEOUT = 30.0


GOAL_P50_MS = 2.0
GOAL_P99_MS = 10.0


#: The key of ``--signed`` runs.
SIGNING_KEY = "latency-benchmark-signing-key-32b"


# -- processes and broker objects: shared by both paths -----------------------


def wait_for_line(process: subprocess.Popen[str], expected: str, log_path: Path) -> None:
    """Wait until ``process`` prints ``expected`` on stdout (READY_TIMEOUT at most)."""
    assert process.stdout is not None
    readable, _, _ = select.select([process.stdout], [], [], READY_TIMEOUT)
    line = process.stdout.readline().strip() if readable else ""
    if line != expected:
        raise RuntimeError(f"{process.args[1]} not ready ({line!r}):\n{tail(log_path)}")


# -- the two paths: each a context manager, ready when it yields --------------


@dataclasses.dataclass(frozen=True)
class Bench:
    """What the paths share: unique names for this run, and where logs go."""

    run_id: str
    domain: str
    workdir: Path
    #: The service signs ([signing] key) and the Subscriber verifies.
    signed: bool = False


@contextlib.contextmanager
def hypervisor_notifier_path(bench: Bench, inbox: Inbox) -> Iterator[None]:
    """The service in a subprocess; a Subscriber on its per-host durable queue here."""
    host = f"bench-{bench.run_id}"
    exchange = f"bench_hn_{bench.run_id}"
    resynced = threading.Event()

    def on_event(event: LifecycleEvent) -> None:
        received_at = time.monotonic()
        if not event.resync:
            inbox.record(received_at, event.instance_name, event.transition.value)
        elif event.instance_name == bench.domain:
            # The service publishes a resync once its libvirt callbacks are registered.
            resynced.set()

    verifier = Verifier({"1": SIGNING_KEY.encode()}) if bench.signed else None
    subscriber = Subscriber(TRANSPORT_URL, on_event, host=host, exchange=exchange, topic=HN_TOPIC,
                            verifier=verifier)  # fmt: skip
    try:
        subscriber.start()
        if not subscriber.wait_ready(READY_TIMEOUT):
            raise RuntimeError("the Subscriber did not get ready")
        # A new outbox each time: a service that remembers what it published resyncs
        # nothing at start, and that resync is the sign it is ready.
        conf_path = bench.workdir / f"notifier-{uuid.uuid4().hex[:8]}.conf"
        conf = write_service_conf(conf_path, host=host, exchange=exchange, signed=bench.signed)
        argv = service_argv(conf)
        log_path = bench.workdir / "notifier.log"
        with running("hypervisor-notifier service", argv, log_path):
            if not resynced.wait(READY_TIMEOUT):
                raise RuntimeError(f"no resync from the service:\n{tail(log_path)}")
            yield
    finally:
        subscriber.stop()
        delete_broker_objects(exchanges=[exchange], queues=[wire.host_queue_name(HN_TOPIC, host)])


def write_service_conf(path: Path, *, host: str, exchange: str, signed: bool) -> str:
    sections: dict[str, dict[str, object]] = {"signing": {"key": SIGNING_KEY}} if signed else {}
    return write_conf(
        path,
        {
            **sections,
            "DEFAULT": {"host": host},
            "libvirt": {"connection_uri": LIBVIRT_URI},
            "publisher": {"transport_url": TRANSPORT_URL, "exchange": exchange, "topic": HN_TOPIC},
            "outbox": {"path": path.with_suffix(".sqlite")},
            "health": {"port": 0},
        },
    )


class OsloEndpoint:
    """Notification endpoint: stamps each INFO notification as it is dispatched."""

    def __init__(self, inbox: Inbox) -> None:
        self.inbox = inbox

    def info(
        self, _ctxt: dict, _publisher_id: str, _event_type: str, payload: dict, _metadata: dict
    ) -> None:
        received_at = time.monotonic()
        self.inbox.record(received_at, payload.get("instance_name"), payload.get("transition"))


@contextlib.contextmanager
def oslo_path(bench: Bench, inbox: Inbox) -> Iterator[None]:
    """``oslo_forwarder.py`` in a subprocess; an oslo.messaging notification listener here."""
    topic = f"bench_{bench.run_id}"
    exchange = f"bench_oslo_{bench.run_id}"
    transport = oslo_messaging.get_notification_transport(cfg.ConfigOpts(), url=TRANSPORT_URL)
    target = oslo_messaging.Target(topic=topic, exchange=exchange)
    listener = oslo_messaging.get_notification_listener(
        transport, [target], [OsloEndpoint(inbox)], executor="threading"
    )
    argv = [sys.executable, str(FORWARDER), "--exchange", exchange, "--topic", topic]
    argv += ["--uri", LIBVIRT_URI, "--transport-url", TRANSPORT_URL]
    log_path = bench.workdir / "oslo_forwarder.log"
    try:
        listener.start()
        with running("oslo forwarder", argv, log_path) as forwarder:
            wait_for_line(forwarder, "ready", log_path)
            yield
    finally:
        listener.stop()
        listener.wait()
        transport.cleanup()
        delete_broker_objects(exchanges=[exchange], queues=[f"{topic}.info"])


PathRunner = Callable[[Bench, Inbox], contextlib.AbstractContextManager[None]]
PATHS: tuple[tuple[str, PathRunner], ...] = (
    ("hypervisor-notifier", hypervisor_notifier_path),
    ("oslo.messaging Notifier", oslo_path),
)


# -- the run ------------------------------------------------------------------


@contextlib.contextmanager
def bench_domain(name: str) -> Iterator[str]:
    """Define and start a test-driver domain for the block; undefine it after."""
    conn = libvirt.open(LIBVIRT_URI)
    try:
        dom = conn.defineXML(DOMAIN_XML.format(name=name))
        try:
            dom.create()
            yield name
        finally:
            if dom.isActive():
                dom.destroy()
            dom.undefine()
    finally:
        conn.close()


def check_clock() -> str:
    info = time.get_clock_info("monotonic")
    if info.implementation != "clock_gettime(CLOCK_MONOTONIC)":
        raise RuntimeError(f"time.monotonic() is {info.implementation}: not system-wide")
    return f"time.monotonic() = {info.implementation}, resolution {info.resolution * 1e9:g} ns"


def machine() -> list[str]:
    daemon = libvirt.open(LIBVIRT_URI)
    try:
        daemon_version = version_text(daemon.getLibVersion())
    finally:
        daemon.close()
    rabbitmq = rabbitmq_version()
    cpus = len(os.sched_getaffinity(0))
    return [
        f"machine: nproc {cpus}, {platform.machine()}, Linux {platform.release()}",
        f"python {platform.python_version()}; libvirt {version_text(libvirt.getVersion())}"
        f" (library), {daemon_version} (libvirtd); libvirt-python "
        f"{importlib.metadata.version('libvirt-python')}; RabbitMQ {rabbitmq}",
        f"kombu {importlib.metadata.version('kombu')}, amqp {importlib.metadata.version('amqp')}"
        f", oslo.messaging {importlib.metadata.version('oslo.messaging')}",
        f"clock: {check_clock()}",
    ]


def version_text(number: int) -> str:
    return f"{number // 1_000_000}.{number // 1000 % 1000}.{number % 1000}"


def report(count: int, results: dict[str, Run]) -> list[str]:
    lines = [
        f"latency from libvirt API call (other process) to subscriber callback, N={count} events"
        " per path, in rounds alternating the paths",
        f"{'path':<25} {'p50 ms':>7}  {'p90 ms':>7}  {'p99 ms':>7}  {'max ms':>7}",
    ]
    stats = {label: Stats.of(run.latencies_ms) for label, run in results.items()}
    for label, row in stats.items():
        lines.append(f"{label:<25} {row.p50:7.2f}  {row.p90:7.2f}  {row.p99:7.2f}  {row.max:7.2f}")
    ours, oslo = (stats[label] for label, _ in PATHS)
    lines.append(
        f"goal: p50 <= {GOAL_P50_MS:g} ms: {yes(ours.p50 <= GOAL_P50_MS)}; "
        f"p99 <= {GOAL_P99_MS:g} ms: {yes(ours.p99 <= GOAL_P99_MS)}; "
        f"no slower than oslo (p50 and p99): {yes(ours.p50 <= oslo.p50 and ours.p99 <= oslo.p99)}"
    )
    for label, run in results.items():
        lines.append(
            f"{label}: {len(run.latencies_ms)} matched, {run.mismatched} mismatched transitions, "
            f"{run.missing} missing (+{WARMUP} warm-up events not counted)"
        )
    return lines


def yes(ok: bool) -> str:
    return "yes" if ok else "no"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1000, help="events per path (default 1000)")
    parser.add_argument(
        "--rounds", type=int, default=4, help="rounds, alternating the paths (default 4)"
    )
    parser.add_argument(
        "--signed", action="store_true", help="the service signs, the Subscriber verifies"
    )
    args = parser.parse_args(argv)
    if args.events < 1 or args.rounds < 1:
        parser.error("--events and --rounds must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    header = machine()
    run_id = uuid.uuid4().hex[:8]
    results: dict[str, Run] = {}
    with (
        tempfile.TemporaryDirectory(prefix="hn-bench-") as workdir,
        bench_domain(f"bench-{run_id}") as domain,
    ):
        bench = Bench(run_id, domain, Path(workdir), signed=args.signed)
        # Rounds alternate the paths (ABBA...): a drift of the machine's load
        # during the run then weighs on both alike.
        per_round = max(1, args.events // args.rounds)
        for round_ in range(args.rounds):
            for label, path in PATHS if round_ % 2 == 0 else PATHS[::-1]:
                inbox = Inbox(domain)
                with path(bench, inbox):
                    progress(f"round {round_ + 1}, {label}: {WARMUP} + {per_round} events")
                    run = measure(inbox, LIBVIRT_URI, domain, per_round)
                results[label] = merge(results.get(label), run)
    print("\n".join([*header, *report(args.events, results)]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
