"""Restarts, confirms and clock steps in any order: seq never goes back, nothing is lost.

A hypothesis state machine drives the real SQLiteOutbox and SequenceCounter
(their wall clock stepped back and forth) against a simple model: the seqs
issued, and those the broker confirmed.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from unittest import mock

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from hypervisor_notifier.notifier.outbox_sqlite import SQLiteOutbox
from hypervisor_notifier.notifier.stamps import SequenceCounter
from tests.factories import make_event

HOUR_NS = 3600 * 10**9
#: The fake wall clock's start (2026); it moves 1 ms per reading, and by steps.
START_NS = 1_790_000_000 * 10**9


class OutboxRestarts(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.directory = tempfile.mkdtemp(prefix="outbox-restarts-")
        self.path = str(Path(self.directory) / "outbox.sqlite")
        self.clock_ns = START_NS
        self.issued: list[int] = []  # every seq handed out, in order
        self.confirmed: set[int] = set()
        self.box = SQLiteOutbox(self.path)
        self.counter = SequenceCounter(self.box.last_seq)
        self.inflight: list = []

    def now_ns(self) -> int:
        self.clock_ns += 10**6
        return self.clock_ns

    @rule(count=st.integers(1, 5))
    def put(self, count: int) -> None:
        with mock.patch("hypervisor_notifier.notifier.service.time.time_ns", self.now_ns):
            for _ in range(count):
                seq = self.counter.next()
                assert not self.issued or seq > self.issued[-1], "seq went back"
                self.issued.append(seq)
                self.box.put(make_event(seq=seq))

    @rule(limit=st.integers(1, 8))
    def take(self, limit: int) -> None:
        self.inflight += self.box.take(limit)

    @precondition(lambda self: self.inflight)
    @rule(data=st.data())
    def confirm(self, data: st.DataObject) -> None:
        indexes = st.integers(0, len(self.inflight) - 1)
        chosen = [self.inflight[i] for i in data.draw(st.lists(indexes, unique=True, min_size=1))]
        self.box.confirm(chosen)
        self.confirmed.update(entry.event.seq for entry in chosen)
        self.inflight = [entry for entry in self.inflight if entry not in chosen]

    @rule()
    def release(self) -> None:
        self.box.release_inflight()
        self.inflight = []

    @rule(hours=st.integers(-3, 3))
    def step_clock(self, hours: int) -> None:
        self.clock_ns += hours * HOUR_NS

    @rule()
    def restart(self) -> None:
        # Every put and confirm is committed when it returns: closing loses nothing
        # a crash would not.
        self.box.close()
        self.box = SQLiteOutbox(self.path)
        self.counter = SequenceCounter(self.box.last_seq)
        self.inflight = []
        waiting = [seq for seq in self.issued if seq not in self.confirmed]
        recovered = [entry.event.seq for entry in self.box.take(len(self.issued) + 1)]
        self.box.release_inflight()
        assert recovered == waiting
        assert self.box.last_seq == max(self.issued, default=0)

    @invariant()
    def usable(self) -> None:
        assert self.box.problem is None

    def teardown(self) -> None:
        self.box.close()
        shutil.rmtree(self.directory)


TestOutboxRestarts = OutboxRestarts.TestCase
TestOutboxRestarts.settings = settings(max_examples=100, stateful_step_count=30, deadline=None)
