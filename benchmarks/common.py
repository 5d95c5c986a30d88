"""What several benchmarks share: the broker, child processes, progress lines.

Not a benchmark: ``latency.py`` and ``throughput.py`` import it (run as
scripts, this directory is first on ``sys.path``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import amqp

TRANSPORT_URL = "rabbit://guest:guest@127.0.0.1:5672/"
BROKER = {"host": "127.0.0.1:5672", "userid": "guest", "password": "guest"}
STOP_TIMEOUT = 40.0


def progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def rabbitmq_version() -> str:
    with amqp.Connection(**BROKER) as connection:
        return str(connection.server_properties.get("version", "?"))


def delete_broker_objects(*, exchanges: list[str], queues: list[str]) -> None:
    """Delete what a path declared on the broker (a fresh channel each: errors close one)."""
    with amqp.Connection(**BROKER) as connection:
        for name in queues:
            with connection.channel() as channel:
                channel.queue_delete(name)
        for name in exchanges:
            with connection.channel() as channel:
                channel.exchange_delete(name)


@contextlib.contextmanager
def running(label: str, argv: list[str], log_path: Path) -> Iterator[subprocess.Popen[str]]:
    """Run ``argv`` (stderr to ``log_path``) for the block; then SIGTERM it and check exit 0."""
    with log_path.open("w") as log:
        process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=log, text=True)
    try:
        yield process
    finally:
        terminate(label, process, log_path)


def terminate(label: str, process: subprocess.Popen[str], log_path: Path) -> None:
    """SIGTERM ``process``, wait for it (kill it after STOP_TIMEOUT), report how it ended."""
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    try:
        code = process.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        code = process.wait()
    if process.stdout is not None:
        process.stdout.close()
    elapsed = time.monotonic() - started
    progress(f"{label}: SIGTERM -> exit {code} in {elapsed:.2f} s")
    if code != 0:
        progress(f"{label} log ({log_path}):\n{tail(log_path)}")


def tail(path: Path, lines: int = 20) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


@dataclasses.dataclass(frozen=True)
class Stats:
    """Percentiles of latencies in milliseconds (nearest rank)."""

    p50: float
    p90: float
    p99: float
    max: float
    min: float

    @classmethod
    def of(cls, values_ms: list[float]) -> Stats:
        ordered = sorted(values_ms)

        def rank(percent: float) -> float:
            return ordered[max(0, math.ceil(percent / 100 * len(ordered)) - 1)]

        return cls(rank(50), rank(90), rank(99), ordered[-1], ordered[0])

    def row(self, label: str) -> str:
        return (
            f"  {label:<44}{self.p50:8.1f}{self.p90:8.1f}{self.p99:8.1f}{self.max:8.1f}"
            f"{self.min:8.1f}"
        )
