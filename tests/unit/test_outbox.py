"""Outboxes: ordered, nothing leaves before confirm, a wake fd that never misses a put.

The contract tests run on both MemoryOutbox and SQLiteOutbox; the durable
one's own promises (recovery after a crash, going on in memory when its file
is unusable) follow, and the coalescing bound of both.
"""

from __future__ import annotations

import random
import select
import sqlite3
import sys
import threading
from collections.abc import Iterator

import pytest

from hypervisor_notifier import wire
from hypervisor_notifier.notifier.outbox import MemoryOutbox
from hypervisor_notifier.notifier.outbox_sqlite import SQLiteOutbox
from tests.factories import make_event


@pytest.fixture(params=["memory", "sqlite"])
def outbox(request, tmp_path) -> Iterator[MemoryOutbox]:
    box = MemoryOutbox() if request.param == "memory" else SQLiteOutbox(str(tmp_path / "o.db"))
    yield box
    box.close()


def put_events(outbox: MemoryOutbox, count: int, first_seq: int = 1) -> None:
    for seq in range(first_seq, first_seq + count):
        outbox.put(make_event(seq=seq))


def seqs(entries) -> list[int]:
    return [entry.event.seq for entry in entries]


#: Seconds a put may take to show on wake_fd before it counts as lost.
WAKE_TIMEOUT = 2.0


def readable(fd: int) -> bool:
    return bool(select.select([fd], [], [], 0)[0])


# -- order and confirm ------------------------------------------------------------------


def test_take_returns_events_in_put_order_up_to_the_limit(outbox):
    put_events(outbox, 5)

    assert seqs(outbox.take(3)) == [1, 2, 3]
    assert seqs(outbox.take(10)) == [4, 5]
    assert outbox.take(10) == []


def test_an_entry_carries_the_encoded_body_of_its_event(outbox):
    event = make_event()
    outbox.put(event)

    (entry,) = outbox.take(1)

    assert entry.event == event
    assert wire.decode(entry.body) == event


def test_taken_entries_are_in_flight_and_not_taken_again(outbox):
    put_events(outbox, 2)
    outbox.take(1)

    assert seqs(outbox.take(10)) == [2]


def test_len_counts_waiting_and_in_flight_until_confirmed(outbox):
    put_events(outbox, 4)
    taken = outbox.take(3)
    assert len(outbox) == 4

    outbox.confirm(taken[:2])

    assert len(outbox) == 2


def test_a_confirmed_entry_is_gone_for_good(outbox):
    put_events(outbox, 3)
    outbox.confirm(outbox.take(2))

    outbox.release_inflight()

    assert seqs(outbox.take(10)) == [3]
    assert len(outbox) == 1


def test_release_inflight_puts_them_back_ahead_of_newer_entries_in_order(outbox):
    put_events(outbox, 4)
    taken = outbox.take(4)
    outbox.confirm([taken[1]])  # the broker confirmed seq 2 only
    put_events(outbox, 2, first_seq=5)

    outbox.release_inflight()

    assert seqs(outbox.take(10)) == [1, 3, 4, 5, 6]


def test_release_inflight_twice_does_not_duplicate(outbox):
    put_events(outbox, 2)
    outbox.take(2)
    outbox.release_inflight()
    outbox.take(1)

    outbox.release_inflight()

    assert seqs(outbox.take(10)) == [1, 2]
    assert len(outbox) == 2


# -- wake_fd ------------------------------------------------------------------------


def test_wake_fd_is_unreadable_while_nothing_was_put(outbox):
    assert not readable(outbox.wake_fd)


def test_put_makes_wake_fd_readable_and_clear_wake_unreadable(outbox):
    outbox.put(make_event())
    assert readable(outbox.wake_fd)

    outbox.clear_wake()

    assert not readable(outbox.wake_fd)


def test_every_put_after_clear_wake_wakes_again(outbox):
    for seq in range(1, 4):
        outbox.put(make_event(seq=seq))
        assert readable(outbox.wake_fd)
        outbox.clear_wake()
        assert not readable(outbox.wake_fd)
        assert seqs(outbox.take(10)) == [seq]


def test_release_inflight_wakes_the_publisher(outbox):
    put_events(outbox, 1)
    outbox.clear_wake()
    outbox.take(1)

    outbox.release_inflight()

    assert readable(outbox.wake_fd)


@pytest.fixture
def fine_thread_switching() -> Iterator[None]:
    """Switch threads every microsecond, not every 5 ms, so that races show up."""
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(interval)


@pytest.mark.usefixtures("fine_thread_switching")
def test_a_put_racing_with_clear_wake_is_never_lost(outbox):
    # The producer puts bursts of 1 to 4 events and waits until they are taken: a
    # lost wake-up leaves the last of a burst waiting while wake_fd stays unreadable.
    count = 10_000
    events = [make_event(seq=seq) for seq in range(count)]
    taken: list[int] = []
    progress = threading.Condition()

    def produce() -> None:
        bursts = random.Random(1234)
        put = 0
        while put < count:
            for _ in range(min(bursts.randint(1, 4), count - put)):
                outbox.put(events[put])
                put += 1
            with progress:
                if not progress.wait_for(lambda put=put: len(taken) >= put, WAKE_TIMEOUT):
                    return

    producer = threading.Thread(target=produce, daemon=True)
    producer.start()
    # The publisher's loop: wait on wake_fd, clear it, take everything waiting.
    while len(taken) < count:
        woke, _, _ = select.select([outbox.wake_fd], [], [], WAKE_TIMEOUT)
        assert woke, f"wake_fd unreadable with {len(outbox)} waiting after {len(taken)} taken"
        outbox.clear_wake()
        batch = outbox.take(count)
        outbox.confirm(batch)
        with progress:
            taken.extend(seqs(batch))
            progress.notify()
    producer.join(timeout=WAKE_TIMEOUT)

    assert taken == list(range(count))
    assert len(outbox) == 0


# -- durability (SQLiteOutbox) -----------------------------------------------------------


def reopen(path) -> SQLiteOutbox:
    """What a restarted service finds: a new outbox on the same file."""
    return SQLiteOutbox(str(path))


def test_unconfirmed_events_survive_a_crash_in_order(tmp_path):
    path = tmp_path / "outbox.sqlite"
    first = SQLiteOutbox(str(path))
    put_events(first, 10)
    taken = first.take(4)  # in flight when the service dies: not confirmed
    first.confirm(taken[:2])
    # No close(): a crash. take() committed everything put before it.

    second = reopen(path)
    assert second.problem is None
    assert len(second) == 8
    assert seqs(second.take(100)) == [3, 4, 5, 6, 7, 8, 9, 10]
    assert readable(second.wake_fd), "recovered events must wake the publisher"
    second.close()


def test_events_put_after_a_recovery_come_after_the_recovered_ones(tmp_path):
    path = tmp_path / "outbox.sqlite"
    first = SQLiteOutbox(str(path))
    put_events(first, 3)
    first.close()

    second = reopen(path)
    put_events(second, 2, first_seq=4)
    entries = second.take(100)
    assert seqs(entries) == [1, 2, 3, 4, 5]
    assert [entry.entry_id for entry in entries] == sorted({e.entry_id for e in entries})
    second.confirm(entries)
    second.close()
    assert len(reopen(path)) == 0


def test_an_unusable_path_degrades_to_memory_and_says_why(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    box = SQLiteOutbox(str(blocker / "outbox.sqlite"))

    assert "is not usable" in box.problem
    assert str(blocker) in box.problem
    put_events(box, 3)  # publishing goes on from memory
    assert seqs(box.take(10)) == [1, 2, 3]
    box.close()


def test_an_unreadable_row_is_dropped_not_fatal(tmp_path):
    path = tmp_path / "outbox.sqlite"
    first = SQLiteOutbox(str(path))
    put_events(first, 2)
    first.close()

    with sqlite3.connect(path) as db:
        db.execute("INSERT INTO events VALUES (?, ?)", (99, b"garbage"))

    second = reopen(path)
    assert seqs(second.take(10)) == [1, 2]
    second.close()


# -- the bound: coalescing ----------------------------------------------------------------


def put_states(outbox, *instances: str) -> None:
    for seq, instance in enumerate(instances, start=1):
        outbox.put(make_event(instance_uuid=instance, seq=seq))


def test_a_full_outbox_drops_the_oldest_event_of_an_instance_with_a_later_one():
    box = MemoryOutbox(max_events=4)
    put_states(box, "a", "b", "a", "c", "a")  # the fifth exceeds the bound

    waiting = box.take(10)
    assert [(e.event.instance_uuid, e.event.seq) for e in waiting] == [
        ("b", 2), ("a", 3), ("c", 4), ("a", 5),
    ]  # fmt: skip
    assert box.coalesced == 1
    box.close()


def test_the_latest_event_of_every_instance_is_never_dropped():
    box = MemoryOutbox(max_events=2)
    put_states(box, "a", "b", "c")

    assert sorted(e.event.instance_uuid for e in box.take(10)) == ["a", "b", "c"]
    assert box.coalesced == 0
    box.close()


def test_in_flight_events_are_not_coalesced():
    box = MemoryOutbox(max_events=2)
    put_states(box, "a", "a")
    in_flight = box.take(2)
    put_states(box, "a")  # over the bound, but both older ones are already sent

    assert box.coalesced == 0
    assert len(box) == 3
    box.confirm(in_flight)
    box.close()


def test_coalesced_events_are_gone_from_the_durable_file_too(tmp_path):
    path = tmp_path / "outbox.sqlite"
    box = SQLiteOutbox(str(path), max_events=2)
    put_states(box, "a", "a", "a")
    box.close()

    again = reopen(path)
    assert [e.event.seq for e in again.take(10)] == [2, 3]
    again.close()


def test_oldest_age_follows_the_oldest_unconfirmed_event(outbox):
    assert outbox.oldest_age() == 0.0
    put_events(outbox, 2)
    taken = outbox.take(1)
    assert outbox.oldest_age() > 0.0
    outbox.confirm(taken)
    outbox.confirm(outbox.take(1))
    assert outbox.oldest_age() == 0.0


def test_instances_with_nothing_waiting_are_forgotten(outbox):
    # Instance UUIDs churn for months: the outbox must not keep one entry each forever.
    for _ in range(3):
        put_states(outbox, "a", "b")
        outbox.confirm(outbox.take(10))
    assert len(outbox) == 0
    assert not outbox._waiting_per_instance


# -- the last state put per instance (what a restart resyncs against) --------------------


def test_the_last_state_put_per_instance_survives_a_restart(tmp_path):
    from hypervisor_notifier.events import PowerState, Transition

    path = tmp_path / "outbox.sqlite"
    first = SQLiteOutbox(str(path))
    first.put(make_event(instance_uuid="a", instance_name="vm-a", power_state=PowerState.RUNNING,
                         transition=Transition.STARTED))  # fmt: skip
    first.put(make_event(instance_uuid="a", instance_name="vm-a", power_state=PowerState.PAUSED,
                         transition=Transition.PAUSED))  # fmt: skip
    first.put(make_event(instance_uuid="b", instance_name="vm-b"))
    first.confirm(first.take(10))  # confirmed events are gone; their states stay
    first.close()

    second = reopen(path)
    assert second.known_states() == {
        "a": ("vm-a", PowerState.PAUSED),
        "b": ("vm-b", PowerState.SHUTDOWN),
    }
    second.forget_states(["b"])
    second.close()
    assert set(reopen(path).known_states()) == {"a"}


def test_a_memory_outbox_knows_no_previous_states():
    box = MemoryOutbox()
    put_events(box, 2)
    assert box.known_states() == {}
    box.close()
