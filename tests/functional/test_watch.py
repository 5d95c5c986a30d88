"""``hypervisor-events watch`` against the real RabbitMQ."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys

import amqp

from hypervisor_notifier import wire
from hypervisor_notifier.cmd.events import URL_ENVIRONMENT
from hypervisor_notifier.events import Transition, utcnow
from hypervisor_notifier.host_events import HostChange, HostEvent, HostObservation
from hypervisor_notifier.signing import Signer
from tests.factories import make_event

from .conftest import BROKER_URL, TIMEOUT, TOPIC
from .test_subscriber import declare_host_queue, publish


def start_watch(names, *args, url_argv=True, stdout=subprocess.PIPE):
    """Start ``watch``; the broker URL on its command line, or (``url_argv=False``) in its env."""
    url = ["--transport-url", BROKER_URL] if url_argv else []
    process = subprocess.Popen(
        [sys.executable, "-m", "hypervisor_notifier.cmd.events", "watch",
         *url, "--exchange", names["exchange"], *args],
        stdout=stdout,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, URL_ENVIRONMENT: BROKER_URL},
    )  # fmt: skip
    for line in process.stderr:  # wait until it consumes: its queue exists only then
        if "subscribed to" in line:
            return process
    raise AssertionError(f"watch exited with {process.wait()}")


def test_watch_prints_one_json_line_per_event_of_the_instance(broker, names):
    declare_host_queue(broker, names["exchange"], names["host"])
    wanted = make_event(host=names["host"], seq=1)
    other = make_event(host=names["host"], seq=2)
    later = make_event(host=names["host"], instance_uuid=wanted.instance_uuid, seq=3)
    watch = start_watch(
        names,
        "--host",
        names["host"],
        "--instance",
        wanted.instance_uuid,
        "--json",
        "--count",
        "2",
    )
    publish(broker, names["exchange"], wanted, other, later)

    out, _ = watch.communicate(timeout=TIMEOUT)
    assert watch.returncode == 0
    lines = [json.loads(line) for line in out.splitlines()]
    assert [line["event_id"] for line in lines] == [wanted.event_id, later.event_id]
    assert all(line["latency_ms"] >= 0 for line in lines)
    assert not lines[0].pop("verified")
    assert {k: v for k, v in lines[0].items() if k != "latency_ms"} == wanted.to_payload()
    # watch reads from a private queue: the host's durable queue keeps every event.
    _, ready, _ = broker.queue_declare(f"hypervisor_events.{names['host']}", passive=True)
    assert ready == 3


def test_watch_prints_readable_lines_for_every_host(broker, names):
    event = make_event(host=names["host"], instance_name="web-1")
    watch = start_watch(names, "--count", "1")
    publish(broker, names["exchange"], event)

    out, _ = watch.communicate(timeout=TIMEOUT)
    assert watch.returncode == 0
    line = out.strip()
    for part in (names["host"], "stopped", "web-1", event.instance_uuid, "power_state=SHUTDOWN",
                 "reason=STOPPED/SHUTDOWN", f"seq={event.seq}", "latency="):  # fmt: skip
        assert part in line


def test_watch_with_the_key_prints_only_signed_events(broker, names, tmp_path):
    key_file = tmp_path / "key"
    key_file.write_text("watch-test-key-of-thirty-two-bytes\n")
    key_file.chmod(0o600)
    signer = Signer("7", b"watch-test-key-of-thirty-two-bytes")
    signed, unsigned, marker = (make_event(host=names["host"]) for _ in range(3))
    watch = start_watch(names, "--json", "--count", "2", "--key-file", str(key_file),
                        "--key-id", "7")  # fmt: skip
    for event, by in ((signed, signer), (unsigned, None), (marker, signer)):
        message = amqp.Message(wire.encode(event, by), delivery_mode=2)
        broker.basic_publish(message, names["exchange"], wire.routing_key(TOPIC, event.host))

    out, err = watch.communicate(timeout=TIMEOUT)
    assert watch.returncode == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert [(line["event_id"], line["verified"]) for line in lines] == [
        (signed.event_id, True),
        (marker.event_id, True),
    ]
    assert "(unverified): event is not signed" in err and "thirty-two" not in err


def test_watch_on_a_terminal_colours_the_chosen_transitions_its_url_off_the_command_line(
    broker, names
):
    terminal, its_side = pty.openpty()
    watch = start_watch(names, "--host", names["host"], "--transition", "stopped",
                        "--count", "1", url_argv=False, stdout=its_side)  # fmt: skip
    os.close(its_side)
    started = make_event(host=names["host"], transition=Transition.STARTED, seq=1)
    stopped = make_event(host=names["host"], seq=2)
    publish(broker, names["exchange"], started, stopped)

    assert watch.wait(TIMEOUT) == 0, watch.stderr.read()
    out = read_all(terminal)
    assert "\033[31mstopped" in out and started.instance_uuid not in out
    assert stopped.instance_uuid in out
    assert "guest:guest" not in " ".join(watch.args)  # nothing secret in the process list


def read_all(terminal: int) -> str:
    """Everything written to a pty whose other side is closed."""
    chunks = []
    while True:
        try:
            chunk = os.read(terminal, 4096)
        except OSError:  # EIO: the other side is closed and drained
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(terminal)
    return b"".join(chunks).decode()


def test_watch_prints_host_events_with_their_own_line(broker, names):
    lost = HostEvent.from_observation(
        HostObservation(HostChange.DISCONNECTED, "keepalive timeout", occurred_at=utcnow()),
        host=names["host"], hypervisor="libvirt", seq=2,
    )  # fmt: skip
    watch = start_watch(names, "--host", names["host"], "--kind", "host", "--count", "1")
    declare_host_queue(broker, names["exchange"], names["host"])
    publish(broker, names["exchange"], make_event(host=names["host"], seq=1), lost)

    out, _ = watch.communicate(timeout=TIMEOUT)
    assert watch.returncode == 0
    (line,) = out.splitlines()  # the guest's event is not of the kind asked for
    for part in (names["host"], "host disconnected", "hypervisor=libvirt",
                 'reason="keepalive timeout"', "seq=2"):  # fmt: skip
        assert part in line
