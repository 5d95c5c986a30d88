"""The sequence numbers and event ids the service stamps, issued a group at a time."""

import uuid

from hypervisor_notifier.notifier.stamps import SequenceCounter, new_event_ids


def test_a_group_of_sequence_numbers_is_consecutive_and_above_the_previous_ones():
    counter = SequenceCounter(start=2**60)  # above the clock: only the counter decides
    first = counter.next()
    group = counter.take(5)
    assert list(group) == list(range(first + 1, first + 6))
    assert counter.next() == first + 6


def test_a_group_never_goes_below_the_clock():
    counter = SequenceCounter()
    assert counter.take(3).start > 10**15  # microseconds since 1970: far above 0


def test_event_ids_are_distinct_version_4_uuids():
    ids = new_event_ids(1000)
    assert len(set(ids)) == 1000
    for event_id in ids:
        parsed = uuid.UUID(event_id)
        assert (parsed.version, parsed.variant, str(parsed)) == (4, uuid.RFC_4122, event_id)
