"""The chaos test's history checker and schedule, on small made-up histories."""

from __future__ import annotations

import itertools

import pytest

from hypervisor_notifier.events import PowerState
from tests.functional.chaos import schedule
from tests.functional.chaos.checker import (
    Guest,
    History,
    Operation,
    Publish,
    Seen,
    Window,
    check,
)

RUNNING, PAUSED, OFF = PowerState.RUNNING, PowerState.PAUSED, PowerState.SHUTDOWN
START = Operation("create", ("started",), RUNNING)
SUSPEND = Operation("suspend", ("paused",), PAUSED)
RESUME = Operation("resume", ("resumed",), RUNNING)
DESTROY = Operation("destroy", ("stopped",), OFF)
STATE = {"started": RUNNING, "paused": PAUSED, "resumed": RUNNING, "stopped": OFF}


def event(n: int, transition: str, uuid: str = "g1", *, resync: bool = False) -> Seen:
    """Event ``e<n>`` of ``uuid`` with seq ``n``."""
    return Seen(f"e{n}", uuid, n, transition, STATE[transition], resync)


def history(operations: list[Operation], delivered: list[Seen], **kwargs) -> History:
    """One guest, every delivered event accepted and published once, unless told otherwise."""
    kwargs.setdefault("accepted", {e.event_id: e for e in delivered})
    kwargs.setdefault(
        "publishes", {i: [Publish(float(e.seq))] for i, e in kwargs["accepted"].items()}
    )
    return History(guests={"g1": Guest(OFF, operations)}, delivered=delivered, **kwargs)


def problems(report) -> str:
    return "\n".join(report.problems)


def test_a_faithful_history_passes_and_is_counted():
    delivered = [event(1, "started"), event(2, "paused"), event(3, "resumed")]
    report = check(history([START, SUSPEND, RESUME], delivered))
    assert report.ok, report.text()
    assert report.counts["operations"] == 3
    assert report.counts["delivered"] == 3
    assert report.counts["lost"] == 0
    assert "no problem found" in report.text()


def test_a_lost_event_is_reported():
    delivered = [event(1, "started"), event(3, "resumed")]
    accepted = {e.event_id: e for e in [*delivered, event(2, "paused")]}
    report = check(history([START, SUSPEND, RESUME], delivered, accepted=accepted))
    assert (
        "lost: 1 accepted events never reached the consumer: paused seq=2 of g1 (published 1x)"
        in problems(report)
    )
    assert report.counts["lost"] == 1


def test_a_stale_drop_of_a_resend_is_no_loss_but_of_an_event_sent_once_it_is():
    # e2 was nacked, resent after e3 was delivered: dropped as stale, and right so.
    delivered = [event(1, "started"), event(3, "resumed")]
    accepted = {e.event_id: e for e in [*delivered, event(2, "paused")]}
    resent = history(
        [START, SUSPEND, RESUME],
        delivered,
        accepted=accepted,
        publishes={"e1": [Publish(1)], "e2": [Publish(2), Publish(4)], "e3": [Publish(3)]},
        stale=["e2"],
    )
    report = check(resent)
    assert report.ok, report.text()
    assert report.counts["stale resends filtered"] == 1

    # A restart with the clock stepped back: the new events have lower seqs.
    late = Seen("e9", "g1", 0, "stopped", OFF)
    delivered = [event(1, "started"), event(2, "paused")]
    accepted = {e.event_id: e for e in [*delivered, late]}
    report = check(history([START, SUSPEND, DESTROY], delivered, accepted=accepted, stale=["e9"]))
    assert "published once were dropped as stale" in problems(report)
    assert "final state wrong for 1: g1 held PAUSED, is SHUTDOWN" in problems(report)


def test_a_reordered_event_is_reported():
    report = check(history([START, SUSPEND, RESUME], [event(1, "started"), event(3, "resumed"),
                                                      event(4, "paused")]))  # fmt: skip
    assert "order: 1 guests got an event their history does not explain" in problems(report)
    assert "paused seq=4 of g1" in problems(report)


def test_a_wrong_final_state_is_reported():
    report = check(history([START, SUSPEND, RESUME], [event(1, "started"), event(2, "paused")]))
    assert problems(report) == "final state wrong for 1: g1 held PAUSED, is RUNNING"


def test_a_guest_never_heard_of_is_right_only_when_off():
    report = check(history([], []))
    assert report.ok, report.text()
    report = check(history([START], []))
    assert "g1 held nothing, is RUNNING" in problems(report)


def test_a_resync_covers_missed_operations_and_may_precede_their_echo():
    # The service was down during suspend/resume/suspend; its resync reports PAUSED,
    # and the callback of the last suspend arrives after the resync's listing.
    operations = [START, SUSPEND, RESUME, SUSPEND]
    delivered = [event(1, "started"), event(2, "paused", resync=True), event(3, "paused")]
    report = check(history(operations, delivered))
    assert report.ok, report.text()
    assert report.counts["transitions not delivered (no service watching, or a resync covered "
                         "them)"] == 2  # fmt: skip


def test_a_resync_state_the_guest_never_reached_again_is_reported():
    delivered = [event(1, "started"), event(2, "paused"), event(3, "started", resync=True),
                 event(4, "paused", resync=True)]  # fmt: skip
    report = check(history([START, SUSPEND, RESUME, DESTROY], delivered))
    assert "resync paused seq=4 of g1" in problems(report)


def test_duplicates_and_seq_going_backwards_in_delivery_are_reported():
    first = event(1, "started")
    report = check(history([START], [first, first]))
    assert "duplicates: 1 events delivered twice: e1" in problems(report)
    report = check(history([START, SUSPEND], [event(5, "started"), event(2, "paused")]))
    assert "seq not increasing in delivery order for: g1" in problems(report)


def test_a_service_that_did_not_settle_is_reported():
    report = check(history([], [], settle_seconds=None))
    assert problems(report) == "the service did not settle after the faults"
    assert report.counts["time to settle (s)"] == "did not settle"


def test_the_schedule_replays_from_its_seed_and_meets_every_kind_each_round():
    first = list(itertools.islice(schedule.faults(7), 21))
    assert first == list(itertools.islice(schedule.faults(7), 21))
    assert first != list(itertools.islice(schedule.faults(8), 21))
    for start in (0, 7, 14):
        assert sorted(f.kind for f in first[start : start + 7]) == sorted(schedule.KINDS)
    # The clock goes an hour away (and the injector steps it back).
    offsets = [int(f.param.split()[0]) for f in first if f.kind == "clock_step"]
    assert [abs(offset) for offset in offsets] == [3600, 3600, 3600]


@pytest.mark.parametrize(
    ("environ", "seconds"),
    [
        ({}, schedule.SHORT_SECONDS),
        ({"HN_CHAOS_LONG": "1"}, schedule.LONG_SECONDS),
        ({"HN_CHAOS_LONG": "1", "HN_CHAOS_SECONDS": "20"}, 20.0),
    ],
)
def test_the_schedule_settings_come_from_the_environment(environ, seconds):
    seed, got = schedule.settings({**environ, "HN_CHAOS_SEED": "42"})
    assert (seed, got) == (42, seconds)
    assert schedule.settings(environ)[1] == seconds


def test_a_loss_is_charged_to_the_last_fault_begun_before_its_first_publish():
    delivered = [event(1, "started")]
    lost = [event(2, "paused"), event(3, "resumed"), event(4, "paused")]
    report = check(
        history(
            [START, SUSPEND, RESUME, SUSPEND],
            delivered,
            accepted={e.event_id: e for e in [*delivered, *lost]},
            faults=[Window("reject_publish", 10.0, 11.0), Window("alarm", 20.0, 21.0)],
            publishes={"e1": [Publish(5.0)], "e2": [Publish(10.5)], "e3": [Publish(25.0)]},
        )
    )
    charged = report.counts["lost, by the last fault begun before their first publish"]
    assert charged == {"alarm": 1, "never published": 1, "reject_publish": 1}
    assert report.counts["faults"] == {"alarm": 1, "reject_publish": 1}


def test_an_unroutable_publish_never_sent_again_is_lost():
    delivered = [event(1, "started"), event(3, "resumed")]
    missing = event(2, "paused")
    report = check(
        history(
            [START, SUSPEND, RESUME],
            delivered,
            accepted={e.event_id: e for e in [*delivered, missing]},
            publishes={
                "e1": [Publish(1.0)],
                "e2": [Publish(10.5, routed=False)],
                "e3": [Publish(11.0, routed=False), Publish(12.0)],
            },
            faults=[Window("queue_delete", 10.0, 11.0)],
        )
    )
    assert report.counts["of which unroutable"] == 2
    assert report.counts["events published more than once"] == 1
    assert (
        problems(report)
        == "lost: 1 accepted events never reached the consumer: paused seq=2 of g1 "
        "(published 1x, 1 unroutable)"
    )


UNDEFINE = Operation("undefine", (), OFF)


def vanished(n: int) -> Seen:
    """A resync's ``vanished`` of g1 with seq ``n`` (no power state: NOSTATE)."""
    return Seen(f"e{n}", "g1", n, "vanished", PowerState.NOSTATE, True)


def test_a_guest_undefined_then_reported_vanished_by_a_resync_is_explained():
    delivered = [event(1, "started"), event(2, "stopped"), vanished(3)]
    report = check(history([START, DESTROY, UNDEFINE], delivered))
    assert report.ok, report.text()


def test_a_vanished_guest_that_was_never_undefined_is_a_problem():
    # The listing lost a guest that still exists: a vanished it does not explain.
    delivered = [event(1, "started"), event(2, "stopped"), vanished(3)]
    report = check(history([START, DESTROY], delivered))
    assert "order" in problems(report) and "final state wrong" in problems(report)
