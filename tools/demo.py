"""Run the service end to end on local defaults and show its events reaching a subscriber.

libvirt's test driver in the local libvirtd is the hypervisor, the local
RabbitMQ the broker. Starts a Subscriber on this demo host's queue and
``hypervisor-notifier``, drives a demo domain through start, suspend,
resume, shutdown, start and destroy, and prints each event as it arrives
with the time from the libvirt call to the subscriber's callback. Exits
non-zero unless every expected transition arrived, in order, and the
notifier then stopped cleanly. Cleans up (domain, queue, exchange, files),
also when interrupted.

Usage: tools/demo.sh (bootstraps the machine, then runs this with .venv's Python).
"""

from __future__ import annotations

import contextlib
import os
import queue
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import kombu
import libvirt

from hypervisor_notifier import wire
from hypervisor_notifier.cmd.events import format_line
from hypervisor_notifier.consumer import Subscriber
from hypervisor_notifier.events import LifecycleEvent
from hypervisor_notifier.transport_url import TransportURL

URI = "test+unix:///default"
BROKER = "rabbit://guest:guest@127.0.0.1:5672/"
TOPIC = "hypervisor_events"
TIMEOUT = 30.0
# What the demo does to its domain, and the transition the subscriber must see for each.
STEPS = [("create", "started"), ("suspend", "paused"), ("resume", "resumed"),
         ("shutdown", "stopped"), ("create", "started"), ("destroy", "stopped")]  # fmt: skip
CONFIG = """[DEFAULT]
host = {host}
backend = libvirt
[libvirt]
connection_uri = {uri}
# The test driver's domains carry no nova metadata: report them anyway.
report_foreign = true
[publisher]
transport_url = {broker}
exchange = {host}
topic = {topic}
[outbox]
path = {tmp}/outbox.sqlite
[health]
port = 0
"""


class DemoFailed(Exception):
    """The demo did not show what it should; the text says what."""


def say(text: str) -> None:
    """Tell the user what the demo does."""
    print(f"demo: {text}", flush=True)


def next_event(
    events: queue.Queue[LifecycleEvent], notifier: subprocess.Popen[bytes]
) -> LifecycleEvent:
    """The next event the subscriber received, or DemoFailed after TIMEOUT."""
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        if notifier.poll() is not None:
            raise DemoFailed(f"hypervisor-notifier exited with status {notifier.returncode}")
        try:
            return events.get(timeout=0.5)
        except queue.Empty:
            continue
    raise DemoFailed(f"no event within {TIMEOUT:.0f} s")


def show(event: LifecycleEvent) -> None:
    """Print an event as ``hypervisor-events watch`` does."""
    latency = (time.time() - event.occurred_at.timestamp()) * 1000
    print(f"event: {format_line(event, latency)}", flush=True)


def run(tmp: Path, host: str, domain_name: str, cleanup: list) -> None:
    """The demo itself; ``cleanup`` collects what to undo, last first."""
    config = tmp / "demo.conf"
    config.write_text(CONFIG.format(host=host, uri=URI, broker=BROKER, topic=TOPIC, tmp=tmp))
    events: queue.Queue[LifecycleEvent] = queue.Queue()
    subscriber = Subscriber(BROKER, events.put, host=host, exchange=host, topic=TOPIC)
    subscriber.start()
    cleanup.append(subscriber.stop)

    say(f"starting hypervisor-notifier (log: {tmp}/notifier.log)")
    log = (tmp / "notifier.log").open("wb")
    notifier = subprocess.Popen(  # noqa: S603 - our own module, fixed arguments
        [sys.executable, "-m", "hypervisor_notifier.cmd.notifier", "--config-file", str(config)],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    cleanup.append(lambda: stop(notifier))
    # The first event is the start-up resync's snapshot of the test driver's own
    # domain "test": proof that hypervisor, notifier and broker all work.
    say("waiting for the notifier's start-up resync")
    show(next_event(events, notifier))

    connection = libvirt.open(URI)
    cleanup.append(connection.close)
    domain_uuid = str(uuid.uuid4())
    domain = connection.defineXML(
        f"<domain type='test'><name>{domain_name}</name><uuid>{domain_uuid}</uuid>"
        "<memory>8192</memory><os><type>hvm</type></os></domain>"
    )
    cleanup.append(lambda: undefine(domain))
    latencies, others = [], 0
    for action, transition in STEPS:
        say(f"{action} {domain_name}")
        started = time.monotonic()
        getattr(domain, action)()
        while True:
            event = next_event(events, notifier)
            if event.instance_uuid != domain_uuid:
                others += 1  # the shared test driver's other guests
                continue
            show(event)
            if event.transition.value == transition:
                break
        latencies.append((time.monotonic() - started) * 1000)
    if others:
        say(f"({others} events of other guests of the test driver not shown)")
    say(f"all {len(STEPS)} transitions arrived in order; from the libvirt call to the "
        f"subscriber: median {statistics.median(latencies):.1f} ms, "
        f"max {max(latencies):.1f} ms")  # fmt: skip
    say("stopping the notifier")
    status = stop(notifier)
    if status != 0:
        raise DemoFailed(f"hypervisor-notifier exited with status {status}")
    say("done: the notifier drained and exited cleanly")


def stop(process: subprocess.Popen[bytes]) -> int:
    """SIGTERM, then SIGKILL after TIMEOUT; the exit status."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
    return process.wait()


def undefine(domain: libvirt.virDomain) -> None:
    """Remove the demo domain (the test driver may have forgotten it already)."""
    for step in (domain.destroy, domain.undefine):
        with contextlib.suppress(libvirt.libvirtError):
            step()


def delete_queue_and_exchange(host: str) -> None:
    """Delete the durable host queue and the exchange the notifier declared."""
    (url,) = TransportURL.parse(BROKER).kombu_urls()
    with kombu.Connection(url) as connection:
        channel = connection.default_channel
        channel.queue_delete(wire.host_queue_name(TOPIC, host))
        channel.exchange_delete(host)


def main() -> int:
    """Run the demo; 0 when every event arrived and the notifier stopped cleanly."""
    # SIGTERM as Ctrl-C: the cleanup below runs either way.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    # libvirt prints every error itself; the cleanup expects some.
    libvirt.registerErrorHandler(lambda *_: None, None)
    suffix = os.urandom(3).hex()
    host = f"hypervisor-demo-{suffix}"
    tmp = Path(tempfile.mkdtemp(prefix="hypervisor-demo."))
    cleanup: list = []
    failed = True
    try:
        run(tmp, host, f"demo-{suffix}", cleanup)
        failed = False
    except DemoFailed as exc:
        say(f"ERROR: {exc}")
    finally:
        # A second Ctrl-C or SIGTERM must not cut the cleanup short.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        for undo in reversed(cleanup):
            undo()
        delete_queue_and_exchange(host)
        if failed:
            log = tmp / "notifier.log"
            if log.exists():
                print(f"--- last lines of {log}", file=sys.stderr)
                print("\n".join(log.read_text().splitlines()[-20:]), file=sys.stderr)
            say(f"files kept in {tmp}")
        else:
            shutil.rmtree(tmp)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
