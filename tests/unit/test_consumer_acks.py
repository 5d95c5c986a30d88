"""Acks in groups: one multiple ack for many handled messages, never covering an unhandled one."""

from __future__ import annotations

from hypervisor_notifier.consumer.acks import AckBatch


class Channel:
    def __init__(self) -> None:
        self.acks: list[tuple[int, bool]] = []

    def basic_ack(self, tag: int, multiple: bool = False) -> None:
        self.acks.append((tag, multiple))


def test_a_full_batch_is_one_multiple_ack_of_its_last_tag():
    channel, batch = Channel(), AckBatch(3)

    for tag in (1, 2, 3, 4):
        batch.handled(channel, tag)

    assert channel.acks == [(3, True)]
    assert batch.pending == 1


def test_a_flush_before_a_reject_covers_only_the_handled_tags():
    channel, batch = Channel(), AckBatch(100)
    batch.handled(channel, 1)
    batch.handled(channel, 2)

    batch.flush()  # what the Subscriber does before rejecting tag 3

    assert channel.acks == [(2, True)]
    batch.flush()
    assert channel.acks == [(2, True)], "nothing pending: no second ack"


def test_due_acks_only_what_waited_long_enough():
    channel, batch = Channel(), AckBatch(100, max_delay=3600)
    batch.handled(channel, 1)
    batch.due()
    assert channel.acks == []

    batch.max_delay = 0
    batch.due()
    assert channel.acks == [(1, True)]


def test_a_new_channel_never_acks_the_old_ones_tags_and_a_lost_one_acks_nothing():
    # The old channel is gone (a reconnection): its tags would be unknown, or
    # another message's, on the new one; the broker redelivers those messages.
    old, new, batch = Channel(), Channel(), AckBatch(100)
    batch.handled(old, 5)
    batch.handled(new, 1)
    batch.flush()
    assert old.acks == []
    assert new.acks == [(1, True)]

    batch.handled(new, 2)
    batch.forget()
    batch.flush()
    assert new.acks == [(1, True)]
