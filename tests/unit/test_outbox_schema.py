"""Which files are opened as the outbox; upgrades, damage, moved copies, the persisted seq.

The real SQLite everywhere: files are made, marked, damaged and inspected here.
"""

from __future__ import annotations

import contextlib
import shutil
import sqlite3
import struct
import time
from pathlib import Path

import pytest

from hypervisor_notifier import wire
from hypervisor_notifier.notifier import outbox_schema
from hypervisor_notifier.notifier.outbox_schema import Kind, OutboxRefused
from hypervisor_notifier.notifier.outbox_sqlite import SQLiteOutbox
from hypervisor_notifier.notifier.stamps import SequenceCounter
from tests.factories import make_event


def snapshot(directory: Path) -> dict[str, bytes | None]:
    """Every entry under ``directory``: its bytes (None for a directory)."""
    return {
        str(p.relative_to(directory)): None if p.is_dir() else p.read_bytes()
        for p in sorted(directory.rglob("*"))
    }


def legacy_outbox(path: Path, seqs: list[int]) -> list[str]:
    """An outbox as the first releases wrote it (no marks), holding events of ``seqs``."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")  # as they did: the shape, not the marks, is theirs
    db.execute("CREATE TABLE IF NOT EXISTS events (id INTEGER PRIMARY KEY, body BLOB)")
    db.execute("CREATE TABLE IF NOT EXISTS states (uuid TEXT PRIMARY KEY, name, power_state)")
    events = [make_event(seq=seq) for seq in seqs]
    db.executemany(
        "INSERT INTO events VALUES (?, ?)",
        [(i, wire.encode(event)) for i, event in enumerate(events, start=1)],
    )
    db.close()
    return [event.event_id for event in events]


# -- what is refused, untouched ---------------------------------------------------------


def refused(path: Path, kind: Kind) -> str:
    """Assert ``path`` is of ``kind``, refused by the outbox and left exactly as it was."""
    before = snapshot(path.parent)
    assert outbox_schema.inspect(str(path)).kind is kind
    with pytest.raises(OutboxRefused) as raised:
        SQLiteOutbox(str(path))
    assert snapshot(path.parent) == before
    message = str(raised.value)
    assert message.startswith(f"[outbox] path {path} ") and "\n" not in message
    return message


def test_a_directory_is_refused_and_untouched(tmp_path):
    directory = tmp_path / "lib"
    (directory / "nova").mkdir(parents=True)
    (directory / "nova" / "state").write_text("precious")
    assert "is a directory" in refused(directory, Kind.DIRECTORY)


def test_a_foreign_sqlite_database_is_refused_and_untouched(tmp_path):
    path = tmp_path / "app.sqlite"
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as db:
        db.execute("CREATE TABLE accounts (id, name)")
        db.execute("INSERT INTO accounts VALUES (1, 'x')")
    assert "not an outbox this service created" in refused(path, Kind.FOREIGN)


def test_a_database_with_another_application_id_is_refused(tmp_path):
    path = tmp_path / "app.sqlite"
    legacy_outbox(path, [1])  # our tables, another application's mark
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as db:
        db.execute("PRAGMA application_id = 1234")
    assert "another application" in refused(path, Kind.FOREIGN)


@pytest.mark.parametrize("content", [b"", b"hello\n", b"SQLite format 3\x00 short"])
def test_a_file_that_is_no_sqlite_database_is_refused_and_untouched(tmp_path, content):
    path = tmp_path / "outbox.sqlite"
    path.write_bytes(content)
    refused(path, Kind.FOREIGN)


def test_an_outbox_of_a_newer_schema_is_refused_and_untouched(tmp_path):
    path = tmp_path / "outbox.sqlite"
    SQLiteOutbox(str(path)).close()
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as db:
        db.execute(f"PRAGMA user_version = {outbox_schema.SCHEMA_VERSION + 1}")
    message = refused(path, Kind.NEWER)
    assert f"schema version {outbox_schema.SCHEMA_VERSION + 1}" in message


# -- created, upgraded ------------------------------------------------------------------


def test_a_new_outbox_is_marked_as_ours_and_created_whole(tmp_path):
    path = tmp_path / "sub" / "outbox.sqlite"
    assert outbox_schema.inspect(str(path)).kind is Kind.MISSING
    SQLiteOutbox(str(path)).close()
    found = outbox_schema.inspect(str(path))
    assert (found.kind, found.version) == (Kind.OURS, outbox_schema.SCHEMA_VERSION)
    assert sorted(p.name for p in path.parent.iterdir()) == ["outbox.sqlite"]


def test_an_outbox_of_the_first_releases_is_upgraded_with_its_events(tmp_path):
    path = tmp_path / "outbox.sqlite"
    event_ids = legacy_outbox(path, [10, 11, 12])
    assert outbox_schema.inspect(str(path)) == outbox_schema.OutboxFile(
        Kind.OURS, 0, "is an outbox of schema version 0"
    )
    box = SQLiteOutbox(str(path))
    assert box.problem is None
    assert [entry.event.event_id for entry in box.take(10)] == event_ids
    assert box.last_seq == 12
    box.close()
    found = outbox_schema.inspect(str(path))
    assert (found.kind, found.version) == (Kind.OURS, outbox_schema.SCHEMA_VERSION)


def test_a_legacy_shape_with_another_table_is_foreign(tmp_path):
    path = tmp_path / "outbox.sqlite"
    legacy_outbox(path, [1])
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as db:
        db.execute("CREATE TABLE mine (x)")
    refused(path, Kind.FOREIGN)


# -- the persisted sequence -------------------------------------------------------------


def test_the_highest_seq_survives_a_restart_with_the_outbox_empty(tmp_path):
    path = tmp_path / "outbox.sqlite"
    box = SQLiteOutbox(str(path))
    future = (time.time_ns() // 1000) + 3600 * 10**6  # a run with the clock an hour ahead
    for seq in (future, future + 1, future + 2):
        box.put(make_event(seq=seq))
    box.confirm(box.take(10))
    box.close()

    restarted = SQLiteOutbox(str(path))
    assert len(restarted) == 0
    assert restarted.last_seq == future + 2
    assert SequenceCounter(restarted.last_seq).next() == future + 3
    restarted.close()


def test_the_recovered_seq_is_the_highest_of_the_recorded_and_the_stored(tmp_path):
    path = tmp_path / "outbox.sqlite"
    box = SQLiteOutbox(str(path))
    for seq in (5, 6, 7):
        box.put(make_event(seq=seq))
    box.confirm(box.take(1))  # records 5; 6 and 7 stay stored
    box.close()
    assert SQLiteOutbox(str(path)).last_seq == 7


def test_the_counter_goes_on_from_the_start_when_the_clock_is_behind():
    start = (time.time_ns() // 1000) + 3600 * 10**6
    counter = SequenceCounter(start)
    assert [counter.next() for _ in range(3)] == [start + 1, start + 2, start + 3]


# -- damage ---------------------------------------------------------------------------


def crashed_outbox(tmp_path: Path, count: int) -> tuple[Path, list[str]]:
    """The files a killed service leaves: an outbox with ``count`` committed events in its WAL."""
    live = tmp_path / "live" / "outbox.sqlite"
    box = SQLiteOutbox(str(live))
    events = [make_event(seq=seq) for seq in range(1, count + 1)]
    for event in events:
        box.put(event)
    path = tmp_path / "outbox.sqlite"
    for suffix in ("", "-wal"):  # copied while open: as a SIGKILL leaves them
        shutil.copyfile(f"{live}{suffix}", f"{path}{suffix}")
    box.close()
    return path, [event.event_id for event in events]


def corrupt_wal_frame(wal: Path, frame: int) -> None:
    """Overwrite bytes in the page of WAL frame ``frame`` (0-based)."""
    data = bytearray(wal.read_bytes())
    page_size = struct.unpack(">I", data[8:12])[0]
    offset = 32 + frame * (24 + page_size) + 24 + 100
    data[offset : offset + 8] = b"garbage!"
    wal.write_bytes(bytes(data))


def test_garbage_in_the_wal_is_reported_kept_and_the_rest_recovered(tmp_path, caplog):
    path, event_ids = crashed_outbox(tmp_path, 20)
    corrupt_wal_frame(Path(f"{path}-wal"), 8)
    damaged_wal = Path(f"{path}-wal").read_bytes()
    assert outbox_schema.inspect(str(path)).kind is Kind.DAMAGED

    box = SQLiteOutbox(str(path))
    assert box.damaged and box.durable  # reported, on a new outbox that keeps its promise
    assert "write-ahead log is damaged" in box.problem and str(path) in box.problem
    assert any(r.levelname == "ERROR" and "write-ahead log" in r.message for r in caplog.records)
    (kept,) = tmp_path.glob("outbox.sqlite.damaged-*[0-9]Z")
    assert Path(f"{kept}-wal").read_bytes() == damaged_wal  # kept as found
    recovered = [entry.event.event_id for entry in box.take(100)]
    assert recovered and recovered == event_ids[: len(recovered)] and len(recovered) < 20
    box.close()
    assert outbox_schema.inspect(str(path)).kind is Kind.OURS  # a new, sound outbox


def test_a_torn_last_frame_is_not_damage(tmp_path):
    path, event_ids = crashed_outbox(tmp_path, 5)
    wal = Path(f"{path}-wal")
    wal.write_bytes(wal.read_bytes()[:-100])  # the last commit was being written
    assert outbox_schema.inspect(str(path)).kind is Kind.OURS
    box = SQLiteOutbox(str(path))
    assert not box.damaged and box.problem is None
    assert [entry.event.event_id for entry in box.take(10)] == event_ids[:4]
    box.close()


def test_a_damaged_page_is_found_by_quick_check(tmp_path):
    path = tmp_path / "outbox.sqlite"
    box = SQLiteOutbox(str(path))
    for seq in range(1, 200):
        box.put(make_event(seq=seq))
    box.close()
    data = bytearray(path.read_bytes())
    page_size = struct.unpack(">H", data[16:18])[0]
    data[3 * page_size : 3 * page_size + 64] = b"\xff" * 64  # an events b-tree page
    path.write_bytes(bytes(data))

    assert outbox_schema.inspect(str(path)).kind is Kind.DAMAGED
    box = SQLiteOutbox(str(path))
    assert box.damaged and "damaged" in box.problem
    box.close()


# -- moved copies: bounded, only ours ---------------------------------------------------


def test_moved_copies_are_bounded_and_only_ours_are_deleted(tmp_path):
    path = tmp_path / "outbox.sqlite"
    stranger = tmp_path / "outbox.sqlite.unusable-20000101T000000000000Z"
    stranger.write_text("not ours: no SQLite header")
    legacy = tmp_path / "outbox.sqlite.unusable"
    legacy.write_text("an older release's copy")
    moved = []
    for _ in range(5):
        SQLiteOutbox(str(path)).close()
        moved.append(outbox_schema.move_aside(str(path), "unusable"))
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted(
        [stranger.name, legacy.name, *(Path(m).name for m in moved[-outbox_schema.KEEP_MOVED :])]
    )


def test_an_unreadable_file_degrades_to_memory_and_is_not_moved(tmp_path):
    path = tmp_path / "lost+found" / "outbox.sqlite"  # missing, under an uncreatable directory
    path.parent.write_text("a file")
    box = SQLiteOutbox(str(path))
    assert "in memory" in box.problem and not box.durable
    box.close()
    assert path.parent.read_text() == "a file"
