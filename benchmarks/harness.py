"""The benchmarks' one small harness: the broker, child processes, timing, the machine's facts.

Not a benchmark: every benchmark of this directory imports it (run as
scripts, this directory is first on ``sys.path``). What a benchmark's
figures mean stays in that benchmark; what they all need is here.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import importlib.metadata
import math
import os
import platform
import signal
import subprocess
import sys
import threading
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


class Countdown:
    """A callback counting its calls (any thread); notes when the target-th came.

    Arguments:
        target: The call whose time :meth:`wait` returns.
        timeout: Seconds :meth:`wait` waits at most.

    """

    def __init__(self, target: int, timeout: float = 120.0) -> None:
        self.target = target
        self.timeout = timeout
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
        """The ``perf_counter`` time of the target-th call; RuntimeError after the timeout."""
        if not self._done.wait(self.timeout):
            raise RuntimeError(f"{what}: {self.count} of {self.target} in {self.timeout:g} s")
        return self.done_at


def write_conf(path: Path, sections: dict[str, dict[str, object]]) -> str:
    """Write an INI file of ``{section: {option: value}}``; return its path."""
    path.write_text(
        "".join(
            f"[{name}]\n" + "".join(f"{key} = {value}\n" for key, value in options.items()) + "\n"
            for name, options in sections.items()
        )
    )
    return str(path)


def service_argv(conf: str) -> list[str]:
    """The command line of the real service with config file ``conf``."""
    return [sys.executable, "-m", "hypervisor_notifier.cmd.notifier", "--config-file", conf]


def wait_for_log(
    process: subprocess.Popen[str], log_path: Path, expected: list[str], timeout: float = 30.0
) -> dict[str, str]:
    """Wait until the log has a line containing each of ``expected``; return those lines.

    Polls the log file (a child's stderr offers nothing else to wait on).
    """
    deadline = time.monotonic() + timeout
    while True:
        log = log_path.read_text(errors="replace").splitlines()
        found = {text: next((line for line in log if text in line), "") for text in expected}
        if all(found.values()):
            return found
        if process.poll() is not None or time.monotonic() > deadline:
            missing = [text for text, line in found.items() if not line]
            raise RuntimeError(f"service log lacks {missing}:\n{tail(log_path)}")
        time.sleep(0.05)


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def versions(*names: str) -> str:
    """``name version`` of each installed distribution, comma-separated."""

    def version(name: str) -> str:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return "not installed"

    return ", ".join(f"{name} {version(name)}" for name in names)


def machine_line() -> str:
    """The machine: cores, processor, kernel, load: what makes figures comparable."""
    cpu = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
         if line.startswith("model name")),
        "?",
    )  # fmt: skip
    load = " ".join(f"{value:.2f}" for value in os.getloadavg())
    return (
        f"machine: nproc {len(os.sched_getaffinity(0))} ({cpu}), {platform.machine()}, "
        f"Linux {platform.release()}, python {platform.python_version()}, load average {load}"
    )


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
        (m for m in mounts if text == m[0] or text.startswith(m[0].rstrip("/") + "/")),
        key=lambda mount: len(mount[0]),
    )
    return f"{best[1]} on {best[0]}"


# -- what else happened meanwhile ------------------------------------------------

#: CPU other processes may use during a measurement (cores, on average) before it is suspect.
OTHERS_MAX_CORES = 0.25


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


def broker_pids(cmdline_contains: bytes = b"") -> list[int]:
    """The RabbitMQ nodes' processes (Erlang's ``beam.smp``) on this machine.

    Arguments:
        cmdline_contains: Only those whose command line holds this (e.g. a node's HOME).

    """
    pids = []
    for comm in Path("/proc").glob("[0-9]*/comm"):
        with contextlib.suppress(OSError):
            if comm.read_text().strip() != "beam.smp":
                continue
            if cmdline_contains in (comm.parent / "cmdline").read_bytes():
                pids.append(int(comm.parent.name))
    return pids


class Watch:
    """Notices what would make figures wrong: a broker restart or alarm, busy neighbours.

    A connection of its own stays open, idle, while a measurement runs: a
    broker that was restarted closed it, one that raised a memory or disk
    alarm told it ``connection.blocked``. CPU time is split between this
    process, the broker, and everything else.
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

    def finish(self) -> tuple[str, list[str]]:
        """The CPU split as a note, and what disturbed the measurement (empty if nothing)."""
        end = Cpu.now(self._pids)
        wall = end.wall - self._start.wall
        ours, broker = end.ours - self._start.ours, end.broker - self._start.broker
        others = max(0.0, end.busy - self._start.busy - ours - broker)
        note = (
            f"CPU over its {wall:.1f} s: this process {ours:.1f} s, RabbitMQ "
            f"{broker:.1f} s, other processes {others:.1f} s"
        )
        problems = list(self.events)
        if others > OTHERS_MAX_CORES * wall:
            problems.append(f"other processes used {others / wall:.2f} cores meanwhile")
        try:
            with contextlib.suppress(TimeoutError):
                while True:
                    self._connection.drain_events(timeout=0)
            self._connection.channel().close()
            self._connection.close()
        except (OSError, amqp.exceptions.AMQPError) as exc:
            problems.append(f"broker connection lost (restarted?): {exc!r}")
            self._connection.collect()
        if not self._pids:
            problems.append("no beam.smp process found: RabbitMQ CPU not counted")
        return note, problems


class FullPasses:
    """The garbage collector's passes over its oldest generation while in the block, in ms.

    Each holds the interpreter: the callbacks and the dispatch thread wait.
    """

    def __init__(self) -> None:
        self.pauses_ms: list[float] = []
        self._started = 0.0

    def __enter__(self) -> FullPasses:
        gc.callbacks.append(self._note)
        return self

    def __exit__(self, *_exc: object) -> None:
        gc.callbacks.remove(self._note)

    def _note(self, phase: str, info: dict[str, int]) -> None:
        if info["generation"] != 2:
            return
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.pauses_ms.append((time.perf_counter() - self._started) * 1000)
