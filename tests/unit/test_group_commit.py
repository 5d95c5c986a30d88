"""Group commit: a batch the backend reports is accepted once, in one transaction, before return.

The events of one ``on_events`` call are stamped by the service and put with
``Outbox.put_many``, which commits them together: when it returns, another
reader of the outbox file sees every one of them, and none is taken for
publishing before.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hypervisor_notifier import wire
from hypervisor_notifier.backends.base import InstanceState
from hypervisor_notifier.events import Observation, PowerState, Transition, utcnow
from hypervisor_notifier.notifier.outbox import MemoryOutbox
from hypervisor_notifier.notifier.outbox_sqlite import SQLiteOutbox
from hypervisor_notifier.notifier.service import Service
from tests.factories import make_event


def bodies_in_file(path: Path) -> list[bytes]:
    """The event rows of the outbox file, read through a connection of our own."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return [body for (body,) in db.execute("SELECT body FROM events ORDER BY id")]
    finally:
        db.close()


@pytest.fixture
def traced(tmp_path) -> Iterator[tuple[SQLiteOutbox, list[str]]]:
    """A SQLite outbox and the statements its connection runs from now on."""
    outbox = SQLiteOutbox(str(tmp_path / "outbox.sqlite"))
    statements: list[str] = []
    assert outbox._db is not None
    outbox._db.set_trace_callback(statements.append)
    yield outbox, statements
    outbox.close()


def transactions(statements: list[str]) -> int:
    """Transactions committed: each COMMIT, and each write run alone (autocommit)."""
    count, inside = 0, False
    for statement in (text.strip().upper() for text in statements):
        if statement == "BEGIN":
            inside = True
        elif statement == "COMMIT":
            inside, count = False, count + 1
        elif not inside and statement.startswith(("INSERT", "DELETE", "UPDATE")):
            count += 1
    return count


def test_put_many_commits_the_batch_in_one_transaction_before_it_returns(traced, tmp_path):
    outbox, statements = traced
    batch = [make_event(seq=seq) for seq in range(1, 101)]

    outbox.put_many(batch)

    assert transactions(statements) == 1
    assert [wire.decode(body) for body in bodies_in_file(tmp_path / "outbox.sqlite")] == batch


def test_a_batch_is_taken_for_publishing_whole_and_in_order_after_earlier_puts(traced):
    outbox, _ = traced
    single = make_event(seq=1)
    outbox.put(single)
    outbox.put_many([make_event(seq=seq) for seq in range(2, 6)])

    assert [entry.event.seq for entry in outbox.take(10)] == [1, 2, 3, 4, 5]


def test_an_empty_batch_writes_nothing(traced):
    outbox, statements = traced

    outbox.put_many([])

    assert statements == []
    assert len(outbox) == 0


def test_a_memory_outbox_takes_a_batch_in_order_too():
    outbox = MemoryOutbox()
    try:
        outbox.put_many([make_event(seq=seq) for seq in range(1, 4)])
        assert [entry.event.seq for entry in outbox.take(10)] == [1, 2, 3]
    finally:
        outbox.close()


class Hypervisor:
    """What the service asks of a backend while it is not started: its name."""

    name = "libvirt"


def observation(name: str, transition: Transition = Transition.PAUSED) -> Observation:
    return Observation(
        f"uuid-{name}", name, transition, PowerState.PAUSED, "E", "D", occurred_at=utcnow()
    )


@pytest.mark.parametrize(
    ("reported", "commits"),
    # A batch in one commit; a burst in groups of at most 64 (Service.MAX_BATCH), the
    # first committed before the rest are even stamped.
    [(20, 1), (150, 3)],
)
def test_the_service_stamps_a_reported_batch_and_commits_it_in_groups_oldest_first(
    traced, tmp_path, reported, commits
):
    outbox, statements = traced
    service = Service(Hypervisor(), outbox, publisher=None, host="compute-1")  # type: ignore[arg-type]
    names = [f"vm-{i}" for i in range(reported)]

    service.on_events([observation(name) for name in names])

    assert transactions(statements) == commits
    stored = [wire.decode(body) for body in bodies_in_file(tmp_path / "outbox.sqlite")]
    assert [event.instance_name for event in stored] == names
    assert {(event.host, event.hypervisor, event.resync) for event in stored} == {
        ("compute-1", "libvirt", False)
    }
    seqs = [event.seq for event in stored]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert service.received["pushed"] == reported


def test_the_log_is_copied_into_the_database_by_the_checkpointer_not_by_the_put(tmp_path):
    path = tmp_path / "outbox.sqlite"
    outbox = SQLiteOutbox(str(path))
    checkpointer = outbox._checkpointer
    assert checkpointer is not None
    try:
        # The put's connection never checkpoints: its commit does not wait for the disk.
        assert outbox._db is not None
        assert outbox._db.execute("PRAGMA wal_autocheckpoint").fetchone() == (0,)
        before = path.stat().st_size
        outbox.put_many([make_event(seq=seq) for seq in range(1, 201)])

        deadline = time.monotonic() + 10
        while path.stat().st_size <= before and time.monotonic() < deadline:
            threading.Event().wait(0.01)
        assert path.stat().st_size > before, "no checkpoint copied the log"
    finally:
        outbox.close()
    assert not checkpointer._thread.is_alive()


def test_a_batch_is_stored_by_one_insert_per_64_rows_not_one_per_row(traced, tmp_path):
    outbox, statements = traced
    batch = [make_event(seq=seq) for seq in range(1, 101)]

    outbox.put_many(batch)

    inserts = [s for s in statements if s.lstrip().upper().startswith("INSERT INTO EVENTS")]
    assert len(inserts) == 2  # 64 rows, then 36
    assert [wire.decode(body) for body in bodies_in_file(tmp_path / "outbox.sqlite")] == batch


class ListedHypervisor(Hypervisor):
    """A hypervisor whose listing shows ``count`` running guests."""

    def __init__(self, count: int) -> None:
        self.listing = [
            InstanceState(f"uuid-{i}", f"vm-{i}", PowerState.RUNNING, "RUNNING")
            for i in range(count)
        ]

    def list_instances(self) -> list[InstanceState]:
        return self.listing


def test_a_resync_commits_what_it_found_together_then_says_connected(traced, tmp_path):
    outbox, statements = traced
    service = Service(ListedHypervisor(10), outbox, publisher=None, host="compute-1")  # type: ignore[arg-type]

    service.on_resync("connected")

    # The ten guests found running in one commit (not one each), then the host's connected.
    assert transactions(statements) == 2
    stored = [wire.decode(body) for body in bodies_in_file(tmp_path / "outbox.sqlite")]
    assert [e.event_type for e in stored] == ["hypervisor.instance.started"] * 10 + [
        "hypervisor.host.connected"
    ]
    assert all(e.resync for e in stored[:10])


def test_a_confirmed_run_of_entries_is_deleted_by_one_statement_in_one_commit(traced, tmp_path):
    outbox, statements = traced
    outbox.put_many([make_event(seq=seq, instance_uuid=f"uuid-{seq}") for seq in range(1, 301)])
    taken = outbox.take(300)
    statements.clear()

    outbox.confirm(taken[:256])

    deletes = [s for s in statements if s.lstrip().upper().startswith("DELETE FROM EVENTS")]
    assert len(deletes) == 1 and transactions(statements) == 1
    # The 256 states in one statement too: BEGIN, DELETE, states, seq, COMMIT.
    assert len(statements) == 5
    left = [wire.decode(body) for body in bodies_in_file(tmp_path / "outbox.sqlite")]
    assert [event.seq for event in left] == list(range(257, 301))


def test_entries_confirmed_around_one_still_in_flight_leave_it_in_the_file(traced, tmp_path):
    outbox, _statements = traced
    outbox.put_many([make_event(seq=seq, instance_uuid=f"uuid-{seq}") for seq in range(1, 6)])
    taken = outbox.take(5)

    outbox.confirm([taken[0], taken[1], taken[3], taken[4]])

    left = [wire.decode(body) for body in bodies_in_file(tmp_path / "outbox.sqlite")]
    assert [event.seq for event in left] == [3]
    assert len(outbox) == 1
