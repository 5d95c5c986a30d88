"""The confirm tracker: an entry is confirmed only by the ack of its own delivery tag.

The state machine plays a publisher (outbox, tracker, resends) against a
model broker that answers tags with acks, nacks (``multiple`` or not),
returns messages and loses connections, in any order RabbitMQ may.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from hypervisor_notifier.notifier.confirms import ConfirmTracker
from hypervisor_notifier.notifier.outbox import Entry
from tests.factories import make_event

INSTANCES = ["a" * 8, "b" * 8, "c" * 8]


def entry(entry_id: int, instance: str = INSTANCES[0]) -> Entry:
    return Entry(entry_id, make_event(instance_uuid=instance, seq=entry_id), b"{}")


def sent(tracker: ConfirmTracker, *entries: Entry) -> list[int]:
    return [tracker.sent(e) for e in entries]


def test_a_multiple_ack_does_not_confirm_a_tag_nacked_before():
    tracker = ConfirmTracker()
    e1, e2, e3 = entry(1, "x"), entry(2, "y"), entry(3, "z")
    sent(tracker, e1, e2, e3)
    assert tracker.nacked(2, multiple=False) == 1
    assert tracker.acked(3, multiple=True) == [e1, e3]
    assert tracker.take_resends(10) == [e2]
    assert tracker.retrying  # until e2's resend is acked
    (tag,) = sent(tracker, e2)
    assert tracker.acked(tag, multiple=False) == [e2]
    assert not tracker.retrying


def test_a_multiple_nack_refuses_only_tags_not_answered_yet():
    tracker = ConfirmTracker()
    entries = [entry(i, f"i{i}") for i in range(1, 5)]
    sent(tracker, *entries)
    assert tracker.acked(2, multiple=False) == [entries[1]]
    assert tracker.nacked(3, multiple=True) == 2
    assert tracker.take_resends(10) == [entries[0], entries[2]]
    assert tracker.in_flight == 1


def test_a_returned_message_is_not_confirmed_by_its_ack():
    tracker = ConfirmTracker()
    e1, e2 = entry(1, "x"), entry(2, "y")
    sent(tracker, e1, e2)
    assert tracker.returned(e1.event.event_id) == e1
    assert tracker.acked(2, multiple=True) == [e2]
    assert tracker.take_resends(10) == [e1]


def test_two_entries_of_one_event_id_in_flight_are_both_confirmed():
    # A copy of an event in the outbox (e.g. salvaged twice) is one more message, not a crash.
    tracker = ConfirmTracker()
    first = entry(1)
    copy = Entry(2, first.event, first.body)
    sent(tracker, first, copy)
    assert tracker.acked(1, multiple=False) == [first]
    assert tracker.acked(2, multiple=False) == [copy]
    assert tracker.in_flight == 0


def test_a_return_of_an_unknown_message_is_ignored():
    assert ConfirmTracker().returned("not-in-flight") is None


def test_a_later_event_of_an_instance_acked_behind_a_nacked_one_is_sent_again_after_it():
    tracker = ConfirmTracker()
    older, newer, other = entry(1, "x"), entry(2, "x"), entry(3, "y")
    sent(tracker, older, newer, other)
    tracker.nacked(1, multiple=False)
    # Acked, but it would be the instance's last message in the queue before the older one.
    assert tracker.acked(3, multiple=True) == [other]
    assert tracker.take_resends(10) == [older, newer]


def test_an_earlier_event_of_an_instance_is_confirmed_even_when_a_later_one_was_nacked():
    tracker = ConfirmTracker()
    older, newer = entry(1, "x"), entry(2, "x")
    sent(tracker, older, newer)
    tracker.nacked(2, multiple=False)
    assert tracker.acked(1, multiple=False) == [older]


def test_resends_are_taken_oldest_first_up_to_the_limit():
    tracker = ConfirmTracker()
    entries = [entry(i, f"i{i}") for i in range(1, 4)]
    sent(tracker, *entries)
    for tag in (3, 1, 2):
        tracker.nacked(tag, multiple=False)
    assert tracker.waiting == 3
    assert tracker.take_resends(2) == entries[:2]
    assert tracker.take_resends(2) == entries[2:]


def test_a_reset_forgets_every_tag_and_counts_what_was_unconfirmed():
    tracker = ConfirmTracker()
    e1, e2 = entry(1, "x"), entry(2, "y")
    sent(tracker, e1, e2)
    tracker.nacked(1, multiple=False)
    assert tracker.reset() == 2
    assert (tracker.in_flight, tracker.waiting, tracker.retrying) == (0, 0, False)
    # Tags start again at 1 on the next channel; a stale ack of the old one confirms nothing.
    assert sent(tracker, e1) == [1]
    assert tracker.acked(5, multiple=False) == []


class PublisherAgainstBroker(RuleBasedStateMachine):
    """A publisher's loop around the tracker, against a broker that answers as RabbitMQ may."""

    @initialize(in_order=st.booleans())
    def start(self, in_order: bool) -> None:
        # in_order: the broker answers tags in publish order (one queue, as RabbitMQ
        # does); otherwise in any order (several queues).
        self.in_order = in_order
        self.tracker = ConfirmTracker()
        self.ids = itertools.count(1)
        self.waiting: list[Entry] = []  # the outbox's waiting entries, oldest first
        self.inflight: dict[int, Entry] = {}  # the outbox's in-flight entries
        self.confirmed: list[Entry] = []
        self.every: list[Entry] = []
        # The broker: tags of this channel not answered, returned tags, enqueued messages.
        self.channel: dict[int, Entry] = {}
        self.next_tag = 1
        self.returned: set[int] = set()
        self.connection = 0
        self.sent_on: dict[int, tuple[int, int]] = {}  # entry_id -> (connection, tag) last sent
        self.queue: list[tuple[int, int, Entry]] = []  # (connection, tag, entry) enqueued

    @rule(instance=st.sampled_from(INSTANCES))
    def put(self, instance: str) -> None:
        new = entry(next(self.ids), instance)
        self.waiting.append(new)
        self.every.append(new)

    def _publish(self, entries: list[Entry]) -> None:
        for e in entries:
            tag = self.tracker.sent(e)
            assert tag == self.next_tag
            self.channel[tag] = e
            self.sent_on[e.entry_id] = (self.connection, tag)
            self.next_tag += 1

    @rule(limit=st.integers(1, 4))
    def publish_new(self, limit: int) -> None:
        if self.tracker.retrying:
            return  # the publisher takes nothing new while resends are unconfirmed
        taken, self.waiting = self.waiting[:limit], self.waiting[limit:]
        self.inflight.update((e.entry_id, e) for e in taken)
        self._publish(taken)

    @rule(limit=st.integers(1, 4))
    def resend(self, limit: int) -> None:
        self._publish(self.tracker.take_resends(limit))

    def _answer(self, pick: Callable[[list[int]], int], multiple: bool) -> list[int]:
        """The tags an answer covers: in order, only the oldest alone or a prefix."""
        tags = sorted(self.channel)
        tag = tags[0] if self.in_order and not multiple else pick(tags)
        return [t for t in tags if t <= tag] if multiple else [tag]

    @precondition(lambda self: self.channel)
    @rule(data=st.data(), multiple=st.booleans())
    def ack(self, data: st.DataObject, multiple: bool) -> None:
        self._ack(self._answer(lambda tags: data.draw(st.sampled_from(tags)), multiple), multiple)

    def _ack(self, covered: list[int], multiple: bool) -> None:
        for tag in covered:
            e = self.channel.pop(tag)
            if tag not in self.returned:
                self.queue.append((self.connection, tag, e))
        confirmed = self.tracker.acked(max(covered), multiple)
        for e in confirmed:
            connection, tag = self.sent_on[e.entry_id]
            # The invariant: confirmed only by the ack of its own (last) tag, not returned.
            assert connection == self.connection and tag in covered
            assert tag not in self.returned
            del self.inflight[e.entry_id]
            self.confirmed.append(e)

    @precondition(lambda self: self.channel)
    @rule(data=st.data(), multiple=st.booleans())
    def nack(self, data: st.DataObject, multiple: bool) -> None:
        covered = self._answer(lambda tags: data.draw(st.sampled_from(tags)), multiple)
        for tag in covered:
            del self.channel[tag]
        assert self.tracker.nacked(max(covered), multiple) == len(covered)

    @precondition(lambda self: self.channel)
    @rule(data=st.data())
    def broker_returns(self, data: st.DataObject) -> None:
        tag = data.draw(st.sampled_from(sorted(set(self.channel) - self.returned) or [0]))
        if tag:
            self.returned.add(tag)
            assert self.tracker.returned(self.channel[tag].event.event_id)

    @rule()
    def lose_connection(self) -> None:
        self.tracker.reset()
        # Unanswered messages may be in the queue already: their acks were lost.
        for tag, e in sorted(self.channel.items()):
            if tag not in self.returned:
                self.queue.append((self.connection, tag, e))
        # The outbox's release_inflight: back ahead of newer entries, in order.
        self.waiting = sorted(self.inflight.values(), key=lambda e: e.entry_id) + self.waiting
        self.inflight.clear()
        self.channel.clear()
        self.returned.clear()
        self.next_tag = 1
        self.connection += 1

    @invariant()
    def confirmed_once_and_counts_agree(self) -> None:
        if not hasattr(self, "tracker"):
            return
        ids = [e.entry_id for e in self.confirmed]
        assert len(ids) == len(set(ids))
        assert self.tracker.in_flight == len(self.channel)
        unconfirmed = len(self.every) - len(self.confirmed)
        assert unconfirmed == len(self.waiting) + len(self.inflight)

    def teardown(self) -> None:
        if not hasattr(self, "tracker"):
            return
        # The broker behaves from now on (acks every tag, in order): nothing is lost.
        for _ in range(len(self.every) + 2):
            self.resend(len(self.every) + 1)
            self.publish_new(len(self.every) + 1)
            while self.channel:
                self._ack([min(self.channel)], multiple=False)
        assert sorted(e.entry_id for e in self.confirmed) == [e.entry_id for e in self.every]
        if self.in_order:
            # The last message of each instance in the queue is its latest event.
            last: dict[str, int] = {}
            for _connection, _tag, e in sorted(self.queue, key=lambda q: (q[0], q[1])):
                last[e.event.instance_uuid] = e.entry_id
            for instance in {e.event.instance_uuid for e in self.every}:
                newest = max(e.entry_id for e in self.every if e.event.instance_uuid == instance)
                assert last[instance] == newest


PublisherAgainstBroker.TestCase.settings = settings(max_examples=300, stateful_step_count=40)
test_publisher_against_broker = PublisherAgainstBroker.TestCase


@pytest.mark.parametrize("count", [1, 3])
def test_resends_only_wait_for_what_is_refused(count):
    tracker = ConfirmTracker()
    entries = [entry(i, f"i{i}") for i in range(1, 2 + count)]
    sent(tracker, *entries)
    tracker.nacked(count, multiple=True)
    assert tracker.waiting == count
    assert tracker.in_flight == 1


class Clock:
    """``time.monotonic`` of the refusals module, moved by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    from hypervisor_notifier.notifier import refusals

    clock = Clock()
    monkeypatch.setattr(refusals.time, "monotonic", clock)
    return clock


def test_refusals_are_reported_while_they_go_on_and_cleared_after(clock):
    from hypervisor_notifier.notifier.refusals import REPORTED_FOR, Refusals

    refusals = Refusals(backoff_max=1.0)
    assert refusals.problem() is None
    refusals.on_nack(3)
    refusals.update(retrying=True, waiting=3)
    assert "3 nacked since start" in refusals.problem()
    # Unresolved: still reported however long ago the nack was.
    clock.now += 10 * REPORTED_FOR
    assert refusals.problem() is not None
    refusals.update(retrying=False, waiting=0)
    assert refusals.problem() is None
    refusals.on_return("x", "t.h.info", declaring=True)
    refusals.update(retrying=False, waiting=0)
    assert "returned events as unroutable (1 since start" in refusals.problem()
    clock.now += REPORTED_FOR
    assert refusals.problem() is None
    assert (refusals.nacked, refusals.returned) == (3, 1)


def test_refused_entries_are_resent_after_a_backoff_that_grows_until_none_is_left(clock):
    from hypervisor_notifier.notifier.refusals import Refusals

    refusals = Refusals(backoff_max=1.0)
    assert refusals.seconds_to_resend() is None
    delays = []
    for _ in range(5):
        refusals.on_nack(1)
        refusals.update(retrying=True, waiting=1)
        delays.append(refusals.seconds_to_resend())
        clock.now += delays[-1]
        assert refusals.seconds_to_resend() == 0
        refusals.resent()
    assert 0 < delays[0] <= 0.1 and delays[-1] > delays[0] and max(delays) <= 1.0
    refusals.update(retrying=False, waiting=0)  # all confirmed: the next refusal starts low
    refusals.update(retrying=True, waiting=1)
    assert refusals.seconds_to_resend() <= 0.1
