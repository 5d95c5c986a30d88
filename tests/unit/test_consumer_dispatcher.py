"""The consumer's decisions without a broker: bodies in, ack / reject / redeliver out, counted."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from hypervisor_notifier import wire
from hypervisor_notifier.consumer.dispatcher import Decision, Dispatcher, SubscriberStats
from hypervisor_notifier.consumer.state import ConsumerState
from hypervisor_notifier.signing import Signer, Verifier
from tests.factories import make_event

KEY = b"k" * 32
HOST = "compute-b"


class Application:
    """The application's callback: records events, fails while told to."""

    def __init__(self) -> None:
        self.events: list = []
        self.failures = 0

    def __call__(self, event) -> None:
        if self.failures:
            self.failures -= 1
            raise RuntimeError("application not ready")
        self.events.append(event)


def counts(stats: SubscriberStats) -> dict[str, int]:
    """The non-zero counters."""
    return {name: value for name, value in dataclasses.asdict(stats).items() if value}


@pytest.fixture
def app() -> Application:
    return Application()


def test_a_valid_event_is_handed_over_and_acked(app):
    dispatcher = Dispatcher(app, host=HOST)
    event = make_event(host=HOST)

    assert dispatcher.dispatch(wire.encode(event)) is Decision.ACK
    assert app.events == [event]
    assert counts(dispatcher.stats) == {"received": 1, "delivered": 1}


def test_a_malformed_body_is_rejected_and_counted(app):
    dispatcher = Dispatcher(app)

    assert dispatcher.dispatch(b"not json") is Decision.REJECT
    assert app.events == []
    assert counts(dispatcher.stats) == {"received": 1, "malformed": 1}


def test_a_hosts_dispatcher_rejects_another_hosts_event_even_signed(app):
    signer, verifier = Signer("1", KEY), Verifier({"1": KEY})
    dispatcher = Dispatcher(app, host=HOST, verifier=verifier)

    other = make_event(host="compute-a")

    assert dispatcher.dispatch(wire.encode(other, signer)) is Decision.REJECT
    assert app.events == []
    assert counts(dispatcher.stats) == {"received": 1, "other_host": 1}


def test_an_every_host_dispatcher_hands_over_every_hosts_events(app):
    dispatcher = Dispatcher(app, host=None)
    events = [make_event(host="compute-a"), make_event(host="compute-b")]

    assert [dispatcher.dispatch(wire.encode(e)) for e in events] == [Decision.ACK] * 2
    assert app.events == events


def test_with_a_verifier_unsigned_and_replayed_events_are_rejected(app):
    signer = Signer("1", KEY)
    dispatcher = Dispatcher(app, host=HOST, verifier=Verifier({"1": KEY}))
    event = make_event(host=HOST)

    decisions = [
        dispatcher.dispatch(wire.encode(make_event(host=HOST))),  # unsigned
        dispatcher.dispatch(wire.encode(event, signer)),
        dispatcher.dispatch(wire.encode(event, signer)),  # the same again
    ]

    assert decisions == [Decision.REJECT, Decision.ACK, Decision.REJECT]
    assert [e.event_id for e in app.events] == [event.event_id]
    assert app.events[0].verified
    assert counts(dispatcher.stats) == {
        "received": 3,
        "delivered": 1,
        "unverified": 1,
        "replayed": 1,
    }


def test_without_a_verifier_a_duplicate_and_a_stale_event_are_acked_not_delivered(app):
    dispatcher = Dispatcher(app, host=HOST)
    first, second = make_event(host=HOST, seq=5), make_event(host=HOST, seq=6)
    second = dataclasses.replace(second, instance_uuid=first.instance_uuid)
    late = make_event(host=HOST, instance_uuid=first.instance_uuid, seq=4)

    decisions = [dispatcher.dispatch(wire.encode(e)) for e in (first, second, first, late)]

    assert decisions == [Decision.ACK] * 4
    assert app.events == [first, second]
    assert counts(dispatcher.stats) == {"received": 4, "delivered": 2, "duplicates": 1, "stale": 1}


def test_a_failing_callback_asks_for_redelivery_and_leaves_the_rest_until_resumed(app):
    dispatcher = Dispatcher(app, host=HOST)
    first, second = make_event(host=HOST), make_event(host=HOST)
    app.failures = 1

    assert dispatcher.dispatch(wire.encode(first)) is Decision.REDELIVER
    # Already sent by the broker before the connection closed: left for the requeue.
    assert dispatcher.dispatch(wire.encode(second)) is Decision.LEAVE
    dispatcher.resume()
    assert [dispatcher.dispatch(wire.encode(e)) for e in (first, second)] == [Decision.ACK] * 2

    assert app.events == [first, second]
    assert counts(dispatcher.stats) == {"received": 3, "delivered": 2, "retried": 1}


def test_an_event_is_given_up_and_rejected_after_max_attempts(app):
    dispatcher = Dispatcher(app, host=HOST, max_attempts=3)
    event = make_event(host=HOST)
    app.failures = 10

    decisions = []
    for _ in range(3):
        decisions.append(dispatcher.dispatch(wire.encode(event)))
        dispatcher.resume()

    assert decisions == [Decision.REDELIVER, Decision.REDELIVER, Decision.REJECT]
    assert counts(dispatcher.stats) == {"received": 3, "retried": 2, "failed": 1}


def test_with_a_state_file_a_replay_is_refused_after_a_restart(app, tmp_path):
    signer = Signer("1", KEY)
    path = str(tmp_path / "state.sqlite")
    paused = make_event(host=HOST, seq=7)
    body = wire.encode(paused, signer)
    first_run = Dispatcher(
        app, host=HOST, verifier=Verifier({"1": KEY}), state=ConsumerState(path)
    )
    assert first_run.dispatch(body) is Decision.ACK

    # A new process: a new verifier (its memory is empty), the same state file.
    restarted = Dispatcher(
        app, host=HOST, verifier=Verifier({"1": KEY}), state=ConsumerState(path)
    )
    late = make_event(host=HOST, instance_uuid=paused.instance_uuid, seq=6)

    assert restarted.dispatch(body) is Decision.REJECT
    assert restarted.dispatch(wire.encode(late, signer)) is Decision.ACK  # stale
    assert [e.event_id for e in app.events] == [paused.event_id]
    assert counts(restarted.stats) == {"received": 2, "replayed": 1, "stale": 1}


def test_without_a_state_file_a_restart_forgets(app):
    signer = Signer("1", KEY)
    body = wire.encode(make_event(host=HOST), signer)
    Dispatcher(app, host=HOST, verifier=Verifier({"1": KEY})).dispatch(body)

    restarted = Dispatcher(app, host=HOST, verifier=Verifier({"1": KEY}))

    assert restarted.dispatch(body) is Decision.ACK  # what the state file is for
    assert len(app.events) == 2


class DispatcherMachine(RuleBasedStateMachine):
    """Random bodies, failures, redeliveries and restarts against a simple model.

    Model: an event reaches the application at most once (per event_id), an
    instance's events in increasing seq, other hosts' never; every message
    gets exactly one decision and the counters add up to what was received.
    """

    def __init__(self) -> None:
        super().__init__()
        import tempfile

        self.directory = tempfile.TemporaryDirectory()
        self.path = f"{self.directory.name}/state.sqlite"
        self.app = Application()
        self.sent: list = []
        self.received = 0
        self.dispatcher = self._new()

    def _new(self) -> Dispatcher:
        return Dispatcher(self.app, host=HOST, max_attempts=3, state=ConsumerState(self.path))

    @rule(instance=st.sampled_from(["i1", "i2"]), seq=st.integers(1, 20),
          other_host=st.booleans())  # fmt: skip
    def new_event(self, instance, seq, other_host):
        event = make_event(host="compute-a" if other_host else HOST, instance_uuid=instance,
                           seq=seq)  # fmt: skip
        self.sent.append(event)
        self._dispatch(event)

    @rule(data=st.data())
    def redelivered(self, data):
        if self.sent:
            self._dispatch(data.draw(st.sampled_from(self.sent)))

    @rule()
    def application_fails_once(self):
        self.app.failures = 1

    @rule()
    def restart(self):
        self.dispatcher.filter.state.close()
        self.received += self.dispatcher.stats.received
        self.dispatcher = self._new()

    def _dispatch(self, event) -> None:
        decision = self.dispatcher.dispatch(wire.encode(event))
        if decision is Decision.REDELIVER:
            self.dispatcher.resume()

    @invariant()
    def each_event_once_in_order_own_host_only(self):
        ids = [e.event_id for e in self.app.events]
        assert len(ids) == len(set(ids))
        assert all(e.host == HOST for e in self.app.events)
        for instance in ("i1", "i2"):
            seqs = [e.seq for e in self.app.events if e.instance_uuid == instance]
            assert seqs == sorted(seqs)

    @invariant()
    def every_message_is_counted_once(self):
        stats = self.dispatcher.stats
        outcomes = (stats.delivered + stats.duplicates + stats.stale + stats.malformed
                    + stats.unverified + stats.replayed + stats.other_host + stats.retried
                    + stats.failed)  # fmt: skip
        assert outcomes == stats.received

    def teardown(self) -> None:
        self.dispatcher.filter.state.close()
        self.directory.cleanup()


DispatcherMachine.TestCase.settings = settings(max_examples=40, stateful_step_count=25,
                                               deadline=None)  # fmt: skip
test_dispatcher_against_a_model = DispatcherMachine.TestCase
