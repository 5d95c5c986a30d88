"""Resident memory of the real service process, with an empty outbox and with 10,000 events.

Usage: ``python benchmarks/memory.py`` (or ``tox -e bench``).

A benchmark, not a test. The service (``python -m hypervisor_notifier.cmd.notifier``)
runs against a broker that refuses connections, so nothing drains, and
libvirt's test driver inside the service (``test:///default``, rather than
the daemon's ``test+unix:///default``, whose guests other processes define).
It is started on an empty outbox, then on an outbox file left with 10,000
events (written by :class:`SQLiteOutbox` itself, for 500 guests). ``VmRSS``
is read once the service logged its start-up resync and its first failed
broker connection (and, for the second, that it loaded the 10,000 events).
That resync reports the left events' guests stopped (they are on no
hypervisor): it queues one event more for each, counted in the bytes per
event.
"""

from __future__ import annotations

import dataclasses
import re
import sqlite3
import sys
import tempfile
import uuid
from pathlib import Path

from bursts import INSTANCES, EventMaker
from harness import (
    machine_line,
    package_state,
    progress,
    running,
    service_argv,
    wait_for_log,
    write_conf,
)

from hypervisor_notifier.notifier.outbox_sqlite import SQLiteOutbox

#: Nothing listens on port 1: the service's publisher is refused and retries.
UNREACHABLE_URL = "rabbit://guest:guest@127.0.0.1:1/"
#: libvirt's test driver in the service's own process; it has no keepalive.
LIBVIRT_URI = "test:///default"
QUEUED = 10_000


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
    conf = write_conf(
        directory / "notifier.conf",
        {
            "DEFAULT": {"host": host, "shutdown_timeout": 1},
            "libvirt": {"connection_uri": LIBVIRT_URI, "keepalive_interval": 0},
            "publisher": {"transport_url": UNREACHABLE_URL, "exchange": f"tbench_rss_{run_id}"},
            "outbox": {"path": outbox_path},
            "health": {"port": 0},
        },
    )
    argv = service_argv(conf)
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


def rows_left(path: str) -> int:
    with sqlite3.connect(path) as db:
        return db.execute("SELECT COUNT(*) FROM events").fetchone()[0]


def proc_status(pid: int) -> dict[str, int]:
    """The ``kB`` fields of /proc/<pid>/status (VmRSS, VmHWM...), in KiB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if value.strip().endswith(" kB"):
            fields[name] = int(value.split()[0])
    return fields


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


def main() -> int:
    run_id = uuid.uuid4().hex[:8]
    memory = {}
    with tempfile.TemporaryDirectory(prefix="hn-memory-") as tmp:
        for queued in (0, QUEUED):
            progress(f"measuring the service's memory with {queued:,} events queued")
            memory[queued] = measure_memory(run_id, Path(tmp), queued)
    print("\n".join([machine_line(), f"package: {package_state()}", *memory_report(memory)]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
