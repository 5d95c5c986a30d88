"""Schema 1.2: guest fault and host events beside lifecycle events (doc/source/wire.rst)."""

from __future__ import annotations

import json

import pytest

from hypervisor_notifier import wire
from hypervisor_notifier.backends.base import AnyObservation
from hypervisor_notifier.consumer.dispatcher import Decision, Dispatcher
from hypervisor_notifier.events import (
    LifecycleEvent,
    MalformedEvent,
    Observation,
    Observed,
    PowerState,
    Transition,
    utcnow,
)
from hypervisor_notifier.faults import Fault, FaultEvent, FaultObservation
from hypervisor_notifier.host_events import HostChange, HostEvent, HostObservation
from hypervisor_notifier.notifier.outbox_sqlite import SQLiteOutbox
from hypervisor_notifier.notifier.service import Service
from hypervisor_notifier.signing import Signer, Verifier
from tests.factories import make_event

KEY = b"k" * 32


def io_error(**details) -> FaultObservation:
    return FaultObservation(
        "uuid-1", "vm-1", Fault.IO_ERROR, "IO_ERROR_REASON", "PAUSE", occurred_at=utcnow(),
        details={"device": "vda", "path": "/x/disk.img", "action": "pause", "error": "enospc",
                 **details},
    )  # fmt: skip


def disconnected() -> HostObservation:
    return HostObservation(HostChange.DISCONNECTED, "end of file", occurred_at=utcnow())


def stamp(observation: AnyObservation, seq: int = 7):
    return observation.event_class.from_observation(
        observation, host="compute1", hypervisor="libvirt", seq=seq
    )


def notification(body: bytes) -> dict:
    return json.loads(json.loads(body)["oslo.message"])


@pytest.mark.parametrize("observation", [io_error(), disconnected()], ids=["fault", "host"])
def test_each_kind_crosses_the_wire_whole_signed_or_not(observation):
    event = stamp(observation)

    assert wire.decode(wire.encode(event)) == event
    signed = wire.decode(wire.encode(event, Signer("k", KEY)), Verifier({"k": KEY}))
    assert signed == event and signed.verified and type(signed) is type(event)


def test_the_event_type_names_the_kind_and_the_payload_carries_its_name():
    fault, host = stamp(io_error()), stamp(disconnected())

    assert notification(wire.encode(fault))["event_type"] == "hypervisor.instance.io_error"
    assert notification(wire.encode(host))["event_type"] == "hypervisor.host.disconnected"
    assert fault.to_payload()["details"]["error"] == "enospc"
    assert "instance_uuid" not in host.to_payload() and host.subject == ""
    assert "transition" not in fault.to_payload() and "power_state" not in fault.to_payload()


@pytest.mark.parametrize(
    "event_type",
    ["hypervisor.instance.stopped", "hypervisor.host.connected", "hypervisor.instance.watchdog"],
)
def test_an_envelope_naming_another_kind_than_its_signed_payload_is_refused(event_type):
    # The signature covers the payload, not the envelope: a forger could relabel it.
    body = json.loads(wire.encode(stamp(io_error()), Signer("k", KEY)))
    inner = json.loads(body["oslo.message"])
    inner["event_type"] = event_type
    body["oslo.message"] = json.dumps(inner)

    with pytest.raises(MalformedEvent):
        wire.decode(json.dumps(body), Verifier({"k": KEY}))


@pytest.mark.parametrize(
    "event_type", ["hypervisor.instance.exploded", "hypervisor.host.", "hypervisor.hostconnected"]
)
def test_an_unknown_event_type_is_malformed(event_type):
    body = json.loads(wire.encode(stamp(disconnected())))
    inner = json.loads(body["oslo.message"])
    inner["event_type"] = event_type
    body["oslo.message"] = json.dumps(inner)

    with pytest.raises(MalformedEvent):
        wire.decode(json.dumps(body))


def test_details_hold_json_scalars_only_and_default_to_empty_before_1_2():
    payload = make_event().to_payload()
    payload["details"] = {"nested": {"a": 1}}
    with pytest.raises(MalformedEvent, match="details"):
        LifecycleEvent.from_payload(payload)
    payload["details"] = ["a"]
    with pytest.raises(MalformedEvent, match="details"):
        LifecycleEvent.from_payload(payload)

    del payload["details"]
    payload["schema_version"] = "1.1"
    assert LifecycleEvent.from_payload(payload).details == {}


class Recorder:
    def __init__(self) -> None:
        self.got: list = []

    def __call__(self, event) -> None:
        self.got.append(event)


def test_a_consumer_of_lifecycle_events_only_acks_the_other_kinds_without_seeing_them():
    app = Recorder()
    dispatcher = Dispatcher(app, host="compute1")

    for observation in (io_error(), disconnected()):
        assert dispatcher.dispatch(wire.encode(stamp(observation))) is Decision.ACK
    assert app.got == [] and dispatcher.stats.skipped == 2 and dispatcher.stats.malformed == 0


def test_each_kind_goes_to_its_own_callback_and_a_host_event_orders_no_guest():
    guests, faults, hosts = Recorder(), Recorder(), Recorder()
    dispatcher = Dispatcher(guests, on_fault=faults, on_host=hosts, host="compute1")
    host_event = stamp(disconnected(), seq=100)
    fault = stamp(io_error(), seq=50)
    # A guest's lifecycle event with a lower seq than the host event (and than its own
    # fault, not applied as a state): delivered, not stale.
    lifecycle = make_event(instance_uuid="uuid-1", seq=60)

    for event in (host_event, fault, lifecycle):
        assert dispatcher.dispatch(wire.encode(event)) is Decision.ACK

    assert (hosts.got, faults.got, guests.got) == ([host_event], [fault], [lifecycle])
    assert dispatcher.stats.stale == 0


class Hypervisor:
    name = "libvirt"


def test_the_service_stamps_every_kind_into_one_sequence_and_keeps_only_states(tmp_path):
    path = str(tmp_path / "outbox.sqlite")
    outbox = SQLiteOutbox(path)
    service = Service(Hypervisor(), outbox, publisher=None, host="compute1")  # type: ignore[arg-type]
    guest_change = Observation("uuid-2", "vm-2", Transition.PAUSED, PowerState.PAUSED,
                               "SUSPENDED", "PAUSED", occurred_at=utcnow())  # fmt: skip

    service.on_events([io_error(), guest_change])
    service.on_disconnected("end of file")
    outbox.close()

    again = SQLiteOutbox(path)
    try:
        kinds = [type(entry.event) for entry in again.take(10)]
        assert kinds == [FaultEvent, LifecycleEvent, HostEvent]
        # Only the lifecycle event is a published state (what a resync compares with).
        assert set(again.known_states()) == {"uuid-2"}
    finally:
        again.close()


@pytest.mark.parametrize(
    ("observation", "own"),
    [
        (Observation, ("u", "vm", Transition.STARTED, PowerState.RUNNING, "STARTED", "BOOTED")),
        (FaultObservation, ("u", "vm", Fault.WATCHDOG, "WATCHDOG", "RESET")),
        (HostObservation, (HostChange.DISCONNECTED, "end of file")),
    ],
)
def test_every_kind_of_observation_takes_when_and_what_else_by_keyword(observation, own):
    # Observed declares them once: after each kind's own fields, never mistaken for one.
    now = utcnow()
    with pytest.raises(TypeError):
        observation(*own, now)

    seen = observation(*own, occurred_at=now)
    told = observation(*own, occurred_at=now, details={"action": "reset"})
    event = stamp(told)

    assert isinstance(seen, Observed) and seen.details == {}
    assert (event.occurred_at, event.details) == (now, {"action": "reset"})
    # A mapping is no hash key: observations with details are still hashable.
    assert hash(told) == hash(seen) and told != seen
