"""What ``[outbox] path`` names, and what the service does with it; ``seq`` across restarts.

The real service process, the real libvirtd (test driver) and RabbitMQ. Only
a file the service created is opened as its outbox: anything else is one line
and exit 2, untouched, and the preflight fails the same way. An outbox of the
first releases is upgraded, a damaged one reported and kept. A restart with
the clock stepped back an hour (libfaketime) is still delivered, in order.
Each test prints what it saw.
"""

from __future__ import annotations

import contextlib
import datetime
import socket
import sqlite3
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from hypervisor_notifier import wire
from hypervisor_notifier.events import Transition
from tests.factories import make_event
from tests.service_process import write_config

from .chaos.injector import FAKETIME_LIB
from .conftest import LIBVIRT_URI, TIMEOUT
from .faults import precondition, sentinel_received, wait_for_health
from .test_status import parse_table

#: The mark of an outbox (``PRAGMA application_id``), and its schema version now.
APPLICATION_ID = 0x484E4F42
SCHEMA_VERSION = 1


def tree(path: Path) -> dict[str, bytes | None]:
    """``path`` and everything under it: bytes of files, None for directories."""
    entries = [path, *path.rglob("*")] if path.is_dir() else [path]
    return {str(p): None if p.is_dir() else p.read_bytes() for p in sorted(entries)}


def siblings(path: Path) -> list[str]:
    """Names beside ``path`` that start with its name (it, and anything made from it)."""
    return sorted(p.name for p in path.parent.iterdir() if p.name.startswith(path.name))


def sqlite_file(path: Path, *statements: str) -> None:
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as db:
        for statement in statements:
            db.execute(statement)


def marks(path: Path) -> tuple[int, int]:
    """(application_id, user_version) of an SQLite file."""
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        return (
            db.execute("PRAGMA application_id").fetchone()[0],
            db.execute("PRAGMA user_version").fetchone()[0],
        )


def foreign_database(path: Path) -> None:
    sqlite_file(path, "CREATE TABLE accounts (id, name)", "INSERT INTO accounts VALUES (1, 'a')")


def newer_outbox(path: Path) -> None:
    """An outbox as a later release would mark it."""
    sqlite_file(
        path,
        "CREATE TABLE events (id INTEGER PRIMARY KEY, body BLOB)",
        f"PRAGMA application_id = {APPLICATION_ID}",
        f"PRAGMA user_version = {SCHEMA_VERSION + 1}",
    )


def a_directory(path: Path) -> None:
    (path / "nova" / "instances").mkdir(parents=True)
    (path / "nova" / "state").write_text("precious")


REFUSED = {
    "directory": (a_directory, "is a directory"),
    "foreign sqlite": (foreign_database, "not an outbox this service created"),
    "not sqlite": (lambda p: p.write_text("[DEFAULT]\nhost = a config file\n"), "not an SQLite"),
    "newer schema": (newer_outbox, f"schema version {SCHEMA_VERSION + 1}, newer"),
}


@pytest.mark.parametrize("case", REFUSED)
def test_a_path_that_is_not_our_outbox_is_one_line_exit_2_and_untouched(
    case, tmp_path, start_service
):
    make, says = REFUSED[case]
    path = tmp_path / "lib"
    make(path)
    before, beside = tree(path), siblings(path)

    service = start_service(outbox={"path": str(path)})
    service.process.wait(TIMEOUT)  # it exits by itself
    status = service.stop()
    print(f"\n{case}: exit status {status}; stderr: {service.log.strip()}")
    assert status == 2, service.log
    assert len(service.lines) == 1, service.log
    assert service.lines[0].startswith(f"hypervisor-notifier: error: [outbox] path {path} ")
    assert says in service.lines[0]
    assert tree(path) == before and siblings(path) == beside  # nothing moved, made or changed


@pytest.mark.parametrize("case", REFUSED)
def test_the_preflight_fails_on_a_path_that_is_not_our_outbox(case, tmp_path, names):
    make, says = REFUSED[case]
    path = tmp_path / "lib"
    make(path)
    before, beside = tree(path), siblings(path)
    config = tmp_path / "notifier.conf"
    write_config(
        config,
        {
            "DEFAULT": {"host": names["host"]},
            "libvirt": {"connection_uri": LIBVIRT_URI},
            "publisher": {"exchange": names["exchange"]},
            "outbox": {"path": str(path)},
        },
    )
    process = subprocess.run(
        [sys.executable, "-m", "hypervisor_notifier.cmd.status", "check",
         "--config-file", str(config), "--timeout", "5"],
        capture_output=True, text=True, timeout=TIMEOUT,
    )  # fmt: skip
    rows = parse_table(process.stdout)
    print(f"\npreflight, {case}: exit {process.returncode}; outbox row {rows['outbox']}")
    assert process.returncode == 2, process.stdout + process.stderr
    result, detail = rows["outbox"]
    assert result == "failure" and detail.startswith(f"[outbox] path {path} ") and says in detail
    assert tree(path) == before and siblings(path) == beside


def test_an_outbox_of_the_first_releases_is_upgraded_and_its_events_published(
    tmp_path, names, make_domain, start_service, subscribe
):
    dom = make_domain()
    uuid = dom.UUIDString()
    # What a first release left, killed while the broker was away, its clock an hour
    # ahead: the shape of its outbox (no marks), and seqs an hour above the clock.
    ahead = int(datetime.datetime.now(datetime.timezone.utc).timestamp() * 1e6) + 3600 * 10**6
    left = [
        make_event(host=names["host"], instance_uuid=uuid, instance_name=dom.name(), seq=seq)
        for seq in (ahead, ahead + 1)
    ]
    path = tmp_path / "outbox.sqlite"
    sqlite_file(
        path,
        "PRAGMA journal_mode=WAL",
        "CREATE TABLE events (id INTEGER PRIMARY KEY, body BLOB)",
        "CREATE TABLE states (uuid TEXT PRIMARY KEY, name, power_state)",
    )
    with contextlib.closing(sqlite3.connect(path)) as db, db:
        db.executemany(
            "INSERT INTO events VALUES (?, ?)",
            [(i, wire.encode(event)) for i, event in enumerate(left, start=1)],
        )
    subscriber, collector = subscribe()

    service = start_service()
    for event in left:
        collector.wait_for(lambda e, event=event: e.event_id == event.event_id)
    dom.create()  # after the recovered events: a later seq than theirs
    started = collector.wait_for(
        lambda e: e.instance_uuid == uuid and e.transition is Transition.STARTED
    )
    upgraded = service.wait_for_log("upgraded from schema version 0")[0].strip()
    assert service.stop() == 0, service.log
    print(
        f"\nold-shape outbox: {len(left)} events published, then STARTED with seq "
        f"{started.seq} (theirs up to {ahead + 1}); {subscriber.stats.stale} stale; "
        f"marks now {marks(path)}; {upgraded}"
    )
    assert started.transition is Transition.STARTED and started.seq > ahead + 1
    assert subscriber.stats.stale == 0
    assert marks(path) == (APPLICATION_ID, SCHEMA_VERSION)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def corrupt_middle_of_wal(wal: Path) -> tuple[int, int]:
    """Garbage in a page of the middle frame of the log's current generation.

    Returns (that frame, the frames of the generation).
    """
    data = bytearray(wal.read_bytes())
    page_size, salts = struct.unpack(">I", data[8:12])[0], data[16:24]
    frame_size = 24 + page_size
    frames = 0
    while 32 + (frames + 1) * frame_size <= len(data):
        if data[32 + frames * frame_size + 8 : 32 + frames * frame_size + 16] != salts:
            break
        frames += 1
    middle = frames // 2
    offset = 32 + middle * frame_size + 24 + 200
    data[offset : offset + 16] = b"garbage garbage!"
    wal.write_bytes(bytes(data))
    return middle, frames


def test_garbage_in_the_wal_of_a_stopped_service_is_reported_and_kept(
    tmp_path, make_domain, start_service, subscribe
):
    dom = make_domain()
    uuid = dom.UUIDString()
    path = tmp_path / "outbox.sqlite"
    nowhere = f"rabbit://guest:guest@127.0.0.1:{free_port()}/"  # events stay in the outbox
    with precondition("a service with events committed in its WAL, killed"):
        first = start_service(transport_url=nowhere, DEFAULT={"debug": "true"})
        first.wait_for_log("resync (connected):")
        dom.create()
        for _ in range(10):
            dom.suspend()
            dom.resume()
        first.wait_for_log(f"({uuid}) RESUMED/", count=10)  # logged once committed
        first.process.kill()
        first.stop()
        frame, frames = corrupt_middle_of_wal(Path(f"{path}-wal"))
        # At least one commit after the damage (a checkpoint may have restarted the log
        # during the shared driver's resync: only the frames since then count).
        assert frames >= 4, frames
    damaged_wal = Path(f"{path}-wal").read_bytes()
    _, collector = subscribe()

    second = start_service()
    port = second.health_port
    body = wait_for_health(port, 503)
    errors = [line.strip() for line in second.lines if " ERROR " in line]
    kept = sorted(tmp_path.glob("outbox.sqlite.damaged-*Z"))
    dom.suspend()  # a new outbox: publishing goes on
    collector.wait_for(lambda e: e.instance_uuid == uuid and e.transition is Transition.PAUSED)
    print(
        f"\nWAL garbage at frame {frame} of {frames}: errors logged {errors}; "
        f"/healthz 503 {body}; kept {[p.name for p in kept]}"
    )
    assert len(errors) == 1 and str(path) in errors[0] and "write-ahead log" in errors[0]
    assert any("damaged" in problem and str(path) in problem for problem in body["problems"])
    (kept_file,) = kept
    assert Path(f"{kept_file}-wal").read_bytes() == damaged_wal  # as found, for inspection


def test_a_restart_with_the_clock_an_hour_back_is_delivered_in_order(
    make_domain, start_service, subscribe
):
    if not FAKETIME_LIB.exists():
        pytest.skip(f"needs {FAKETIME_LIB} (Debian package faketime)")
    dom = make_domain()
    uuid = dom.UUIDString()
    subscriber, collector = subscribe()
    with precondition("a first run, its events received"):
        first = start_service()
        dom.create()
        dom.suspend()
        collector.wait_for(lambda e: e.instance_uuid == uuid and e.transition is Transition.PAUSED)
        assert first.stop() == 0, first.log
    before = len(collector.of(uuid))

    # NTP stepped the clock back an hour while the service was down: only the wall
    # clock (the monotonic one never steps).
    # libfaketime preloaded into the service itself: the faketime command would fork
    # it, and a SIGTERM to the command leaves the service running.
    second = start_service(
        env={
            "LD_PRELOAD": str(FAKETIME_LIB),
            "FAKETIME": "-1h",
            "FAKETIME_DONT_FAKE_MONOTONIC": "1",
        }
    )
    second.wait_for_log("resync (connected):")
    dom.resume()
    dom.suspend()
    dom.resume()
    sentinel_received(make_domain, collector)
    after = collector.of(uuid)[before:]
    real_now = datetime.datetime.now(datetime.timezone.utc)
    print(
        f"\nclock an hour back: after the restart {[e.transition.value for e in after]}, "
        f"seqs {[e.seq for e in after]} (before: {collector.of(uuid)[before - 1].seq}); "
        f"{subscriber.stats.stale} stale; occurred_at {after[-1].occurred_at if after else '-'} "
        f"(real time {real_now})"
    )
    with precondition("the restarted service runs an hour back"):
        last = collector.events[-1]  # the sentinel's
        assert real_now - last.occurred_at > datetime.timedelta(minutes=50), last
    assert [e.transition for e in after] == [
        Transition.RESUMED,
        Transition.PAUSED,
        Transition.RESUMED,
    ]
    seqs = [e.seq for e in collector.of(uuid)]
    assert seqs == sorted(seqs) and subscriber.stats.stale == 0
