"""EventFilter: an application sees each event once, and no instance's state rolls back."""

from __future__ import annotations

from hypervisor_notifier.consumer.ordering import EventFilter, Verdict
from tests.factories import make_event

INSTANCE = "6e9a4d5c-1b2f-4a8e-b3c7-d0e1f2a3b4c5"


def deliver(event_filter: EventFilter, *events) -> None:
    for event in events:
        assert event_filter.verdict(event) is Verdict.DELIVER
        event_filter.delivered(event)


def test_new_events_are_delivered():
    event_filter = EventFilter()

    deliver(event_filter, make_event(seq=1), make_event(seq=2))


def test_an_event_id_seen_before_is_a_duplicate():
    event_filter = EventFilter()
    event = make_event(instance_uuid=INSTANCE, seq=5)
    deliver(event_filter, event)

    assert event_filter.verdict(event) is Verdict.DUPLICATE


def test_verdict_alone_does_not_record_the_event():
    event_filter = EventFilter()
    event = make_event()

    event_filter.verdict(event)

    assert event_filter.verdict(event) is Verdict.DELIVER


def test_an_older_seq_of_the_same_host_and_instance_is_stale():
    event_filter = EventFilter()
    deliver(event_filter, make_event(instance_uuid=INSTANCE, seq=7))

    assert event_filter.verdict(make_event(instance_uuid=INSTANCE, seq=6)) is Verdict.STALE


def test_stale_is_judged_against_the_newest_delivered_seq():
    event_filter = EventFilter()
    deliver(event_filter, make_event(instance_uuid=INSTANCE, seq=9))
    # Delivered out of band (e.g. by an application that ignores the verdict).
    event_filter.delivered(make_event(instance_uuid=INSTANCE, seq=3))

    assert event_filter.verdict(make_event(instance_uuid=INSTANCE, seq=8)) is Verdict.STALE


def test_a_newer_seq_of_the_same_instance_is_delivered():
    event_filter = EventFilter()

    deliver(
        event_filter,
        make_event(instance_uuid=INSTANCE, seq=7),
        make_event(instance_uuid=INSTANCE, seq=8),
    )


def test_an_older_seq_of_another_instance_is_delivered():
    event_filter = EventFilter()
    deliver(event_filter, make_event(instance_uuid=INSTANCE, seq=7))

    assert event_filter.verdict(make_event(seq=1)) is Verdict.DELIVER


def test_another_hosts_event_for_the_same_instance_is_not_stale():
    # seq is per host: after a migration the destination counts from its own seq.
    event_filter = EventFilter()
    deliver(event_filter, make_event(host="source", instance_uuid=INSTANCE, seq=900))

    event = make_event(host="destination", instance_uuid=INSTANCE, seq=3)

    assert event_filter.verdict(event) is Verdict.DELIVER


def test_dedupe_memory_is_bounded_and_forgets_the_oldest_first():
    event_filter = EventFilter(max_ids=3)
    # Different instances, so only the event_id memory can call them duplicates.
    events = [make_event(seq=1) for _ in range(4)]
    deliver(event_filter, *events)

    assert event_filter.verdict(events[0]) is Verdict.DELIVER  # forgotten
    for remembered in events[1:]:
        assert event_filter.verdict(remembered) is Verdict.DUPLICATE
