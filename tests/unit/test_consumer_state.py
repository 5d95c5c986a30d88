"""The consumer's state file: what it remembers across restarts, bounded, and only its own file."""

from __future__ import annotations

import sqlite3

import pytest

from hypervisor_notifier.consumer import state as state_module
from hypervisor_notifier.consumer.ordering import EventFilter, Verdict
from hypervisor_notifier.consumer.state import ConsumerState
from tests.factories import make_event


def test_delivered_ids_and_last_seqs_survive_a_reopen(tmp_path):
    path = str(tmp_path / "sub" / "state.sqlite")  # the directory is created
    first = make_event(seq=3)
    older = make_event(instance_uuid=first.instance_uuid, seq=2)
    event_filter = EventFilter(state=ConsumerState(path))
    event_filter.delivered(first)
    event_filter.state.close()

    reopened = EventFilter(state=ConsumerState(path))

    assert reopened.verdict(first) is Verdict.DUPLICATE
    assert reopened.verdict(older) is Verdict.STALE
    assert reopened.verdict(make_event(seq=1)) is Verdict.DELIVER


def test_the_file_is_bounded_to_the_newest_ids_and_instances(tmp_path, monkeypatch):
    monkeypatch.setattr(state_module, "TRIM_EVERY", 5)
    state = ConsumerState(str(tmp_path / "state.sqlite"), max_ids=10)
    events = [make_event(seq=n) for n in range(40)]
    for event in events:
        state.delivered(event.event_id, event.host, event.instance_uuid, event.seq)

    ids, seqs = state.load()

    assert ids == [e.event_id for e in events[-10:]]
    assert set(seqs) == {(e.host, e.instance_uuid) for e in events[-10:]}


@pytest.mark.parametrize("kind", ["text", "sqlite", "directory"])
def test_a_file_that_is_not_a_consumer_state_is_refused_and_left_alone(tmp_path, kind):
    path = tmp_path / "state"
    if kind == "text":
        path.write_text("precious notes\n" * 100)
    elif kind == "sqlite":
        with sqlite3.connect(path) as other:
            other.execute("CREATE TABLE accounts (name TEXT)")
    else:
        path.mkdir()
    before = path.read_bytes() if path.is_file() else None

    with pytest.raises(ValueError, match=rf"^consumer state file '{path}': "):
        ConsumerState(str(path))

    assert (path.read_bytes() if path.is_file() else None) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state"]


def test_a_failed_write_is_logged_and_counted_and_the_consumer_goes_on(tmp_path, caplog):
    state = ConsumerState(str(tmp_path / "state.sqlite"))
    state._db.execute("PRAGMA query_only = ON")  # every write now fails, as on a full disk
    event_filter = EventFilter(state=state)
    event = make_event()

    event_filter.delivered(event)

    assert state.failures == 1
    assert event_filter.verdict(event) is Verdict.DUPLICATE  # still remembered in memory
    assert any("could not record event" in r.getMessage() for r in caplog.records)
