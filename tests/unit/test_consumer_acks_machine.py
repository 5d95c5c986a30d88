"""The Subscriber's acks against a model broker: never one covering a message not handled.

The Subscriber's own message handler, ack batch and loop turns (no
network) are driven by a model of one queue: a channel hands out delivery
tags in order; an ack with ``multiple`` settles every outstanding tag up
to it; a lost connection requeues every unsettled message, in order, to be
delivered again with new tags on a new channel.

What must hold whatever the interleaving: an ack (or the tags a
``multiple`` ack covers) only ever settles a message whose callback
returned, or which needed none (a duplicate); a malformed message is
rejected, never acked, and counted; a failing callback's message is
redelivered, in order; in the end every good event reached the
application exactly once, in the order published, and nothing is left.
"""

from __future__ import annotations

import itertools
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from hypervisor_notifier import wire
from hypervisor_notifier.consumer.subscriber import Subscriber, _Redeliver
from tests.factories import make_event

URL = "rabbit://guest:guest@127.0.0.1:5672/"


class Channel:
    """One channel of the model broker: its outstanding tags and what settled them."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.outstanding: dict[int, Any] = {}
        self.tags = itertools.count(1)

    def basic_ack(self, tag: int, multiple: bool = False) -> None:
        assert tag in self.outstanding, f"ack of tag {tag}, not outstanding (a channel error)"
        covered = [t for t in self.outstanding if t <= tag] if multiple else [tag]
        for each in covered:
            self.broker.settle(self.outstanding.pop(each), acked=True)

    def basic_reject(self, tag: int, requeue: bool = True) -> None:
        assert tag in self.outstanding, f"reject of tag {tag}, not outstanding"
        assert not requeue
        self.broker.settle(self.outstanding.pop(tag), acked=False)


class Message:
    """What py-amqp hands the Subscriber: body, channel, delivery_info."""

    def __init__(self, channel: Channel, tag: int, entry: Entry) -> None:
        self.body, self.channel = entry.body, channel
        self.delivery_info = {"delivery_tag": tag}


class Entry:
    """A published message and what the model knows of it."""

    def __init__(self, kind: str, body: bytes, event: Any = None) -> None:
        self.kind, self.body, self.event = kind, body, event


class Broker:
    def __init__(self, machine: AcksMachine) -> None:
        self.machine = machine
        self.queue: list[Entry] = []
        self.channel = Channel(self)
        self.acked: list[Entry] = []
        self.rejected: list[Entry] = []

    def settle(self, entry: Entry, acked: bool) -> None:
        if acked:
            # Handled: a good event the application has (a duplicate: had before).
            assert entry.kind in ("good", "duplicate"), f"acked a {entry.kind} message"
            assert entry.event in self.machine.handled, "acked before its callback returned"
            self.acked.append(entry)
        else:
            assert entry.kind == "malformed", f"rejected a {entry.kind} message"
            self.rejected.append(entry)

    def close_channel(self) -> None:
        """The connection is gone: what was not settled is requeued at the head, in order."""
        unsettled = [self.channel.outstanding[t] for t in sorted(self.channel.outstanding)]
        self.queue[:0] = unsettled
        self.channel = Channel(self)


class AcksMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.broker = Broker(self)
        self.handled: list[Any] = []
        self.published: list[Entry] = []
        self.failing: set[str] = set()
        self.waiting = False
        self.closing = False
        self.subscriber = Subscriber(URL, self.callback, queue="q", prefetch_count=8)
        # The loop's view of the socket, set by the rules.
        self.subscriber.message_waiting = lambda: self.waiting  # type: ignore[method-assign]
        self.subscriber.on_consume_ready(None, None, None)

    def callback(self, event: Any) -> None:
        if event.event_id in self.failing:
            self.failing.discard(event.event_id)
            raise RuntimeError("application not ready")
        self.handled.append(event)

    # -- what publishers do --------------------------------------------------

    @rule(fails=st.booleans())
    def publish_good(self, fails: bool) -> None:
        event = make_event(host="compute-a")
        if fails:
            self.failing.add(event.event_id)
        self._publish(Entry("good", wire.encode(event), event))

    @rule()
    def publish_malformed(self) -> None:
        self._publish(Entry("malformed", b'{"oslo.version": "2.0", "oslo.message": "{"}'))

    @precondition(lambda self: any(e.kind == "good" for e in self.published))
    @rule(data=st.data())
    def publish_duplicate(self, data: st.DataObject) -> None:
        # A publisher's resend of an event delivered (or about to be).
        original = data.draw(st.sampled_from([e for e in self.published if e.kind == "good"]))
        self._publish(Entry("duplicate", original.body, original.event))

    def _publish(self, entry: Entry) -> None:
        self.published.append(entry)
        self.broker.queue.append(entry)

    # -- what the Subscriber's loop does ----------------------------------------

    @precondition(lambda self: self.broker.queue)
    @rule()
    def deliver(self) -> None:
        """The broker sends the queue's head (within the prefetch); the Subscriber handles it."""
        if len(self.broker.channel.outstanding) >= self.subscriber.prefetch_count:
            return
        entry = self.broker.queue.pop(0)
        channel = self.broker.channel
        tag = next(channel.tags)
        channel.outstanding[tag] = entry
        try:
            self.subscriber._on_message(Message(channel, tag, entry))
        except _Redeliver:
            # The loop ends; frames already read are still handled (left) until
            # the connection closes, which the reconnect rule does.
            self.closing = True

    @rule(waiting=st.booleans())
    def loop_turns(self, waiting: bool) -> None:
        if self.closing:
            return
        self.waiting = waiting
        self.subscriber.on_iteration()

    @precondition(lambda self: self.closing)
    @rule()
    def reconnect(self) -> None:
        self.broker.close_channel()
        self.closing = False
        self.subscriber.on_consume_ready(None, None, None)

    @rule()
    def connection_lost(self) -> None:
        self.reconnect()

    @invariant()
    def application_saw_each_event_once_in_order(self) -> None:
        ids = [event.event_id for event in self.handled]
        assert len(ids) == len(set(ids))
        order = [e.event.event_id for e in self.published if e.kind == "good"]
        assert ids == [i for i in order if i in set(ids)]

    def teardown(self) -> None:
        # Run to the end: reconnect if needed, deliver everything, go idle.
        for _ in range(10 * len(self.published) + 10):
            if self.closing:
                self.reconnect()
            elif self.broker.queue:
                self.deliver()
                self.loop_turns(waiting=bool(self.broker.queue))
            else:
                break
        self.loop_turns(waiting=False)
        assert not self.broker.queue and not self.broker.channel.outstanding
        good = [e.event.event_id for e in self.published if e.kind == "good"]
        assert [event.event_id for event in self.handled] == good
        malformed = [e for e in self.published if e.kind == "malformed"]
        assert self.broker.rejected == malformed
        assert self.subscriber.stats.malformed == len(malformed)


AcksMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
test_acks_against_a_model_broker = AcksMachine.TestCase
