"""MemoryOutbox: ordered, nothing leaves before confirm, and a wake fd that never misses a put."""

from __future__ import annotations

import random
import select
import sys
import threading
from collections.abc import Iterator

import pytest

from hypervisor_notifier import wire
from hypervisor_notifier.outbox import MemoryOutbox
from tests.factories import make_event


@pytest.fixture
def outbox() -> Iterator[MemoryOutbox]:
    box = MemoryOutbox()
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
