"""LifecycleEvent and its payload: the wire contract of doc/source/wire.rst."""

from __future__ import annotations

import dataclasses
import datetime
import json

import pytest

from hypervisor_notifier.events import (
    LifecycleEvent,
    MalformedEvent,
    Observation,
    PowerState,
    Transition,
)
from tests.factories import make_event

UTC = datetime.timezone.utc
PLUS_TWO = datetime.timezone(datetime.timedelta(hours=2))

#: doc/source/wire.rst, the payload: every key, no other.
PAYLOAD_KEYS = {
    "schema_version",
    "event_id",
    "host",
    "hypervisor",
    "instance_uuid",
    "instance_name",
    "transition",
    "power_state",
    "reason",
    "detail",
    "occurred_at",
    "seq",
    "resync",
    "details",
}
#: Keys a decoder reads as empty when absent (``details``: added in 1.2).
OPTIONAL_KEYS = {"details"}


# -- to_payload / from_payload --------------------------------------------------


def test_payload_round_trip_keeps_every_field():
    event = make_event(
        host="compute7.example.org",
        hypervisor="esx",
        instance_name="vm-ünïcode",
        transition=Transition.MIGRATION_COMPLETED,
        power_state=PowerState.PAUSED,
        reason="STOPPED",
        detail="MIGRATED",
        occurred_at=datetime.datetime(2024, 2, 29, 23, 59, 58, 123456, tzinfo=UTC),
        seq=2**40,
        resync=True,
    )

    # Through JSON, as on the wire.
    decoded = LifecycleEvent.from_payload(json.loads(json.dumps(event.to_payload())))

    assert decoded == event
    assert decoded.occurred_at.microsecond == 123456
    assert decoded.occurred_at.utcoffset() == datetime.timedelta(0)


@pytest.mark.parametrize("transition", list(Transition))
def test_payload_round_trip_for_every_transition(transition):
    event = make_event(transition=transition)
    assert LifecycleEvent.from_payload(event.to_payload()) == event


@pytest.mark.parametrize("power_state", list(PowerState))
def test_payload_round_trip_for_every_power_state(power_state):
    event = make_event(power_state=power_state)
    assert LifecycleEvent.from_payload(event.to_payload()) == event


def test_payload_has_exactly_the_contract_keys():
    assert set(make_event().to_payload()) == PAYLOAD_KEYS


def test_payload_values_are_plain_json_types():
    payload = make_event(transition=Transition.PAUSED, power_state=PowerState.PAUSED).to_payload()

    assert payload["transition"] == "paused"
    assert payload["power_state"] == 3
    assert json.loads(json.dumps(payload)) == payload


@pytest.mark.parametrize(
    ("occurred_at", "on_the_wire"),
    [
        (
            datetime.datetime(2024, 2, 29, 23, 59, 58, 123456, tzinfo=UTC),
            "2024-02-29T23:59:58.123456Z",
        ),
        # Another offset is converted to UTC, across a day boundary.
        (
            datetime.datetime(2024, 3, 1, 1, 59, 58, 123456, tzinfo=PLUS_TWO),
            "2024-02-29T23:59:58.123456Z",
        ),
        # Microseconds are always written, even when zero.
        (datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC), "2024-01-02T03:04:05.000000Z"),
    ],
    ids=["utc", "other-offset", "zero-microseconds"],
)
def test_occurred_at_is_utc_iso8601_with_microseconds_and_z(occurred_at, on_the_wire):
    assert make_event(occurred_at=occurred_at).to_payload()["occurred_at"] == on_the_wire


def test_from_payload_reads_a_payload_written_to_the_contract(wire_payload):
    event = LifecycleEvent.from_payload(wire_payload)

    assert event.event_id == wire_payload["event_id"]
    assert event.host == "compute1.example.org"
    assert event.hypervisor == "libvirt"
    assert event.instance_uuid == wire_payload["instance_uuid"]
    assert event.instance_name == "instance-0000002a"
    assert event.transition is Transition.STOPPED
    assert event.power_state is PowerState.SHUTDOWN
    assert (event.reason, event.detail) == ("STOPPED", "SHUTDOWN")
    assert event.occurred_at == datetime.datetime(2024, 2, 29, 23, 59, 58, 123456, tzinfo=UTC)
    assert event.seq == 42
    assert event.resync is False


def test_from_payload_accepts_a_utc_offset_instead_of_z(wire_payload):
    wire_payload["occurred_at"] = "2024-03-01T01:59:58.123456+02:00"

    event = LifecycleEvent.from_payload(wire_payload)

    assert event.occurred_at == datetime.datetime(2024, 2, 29, 23, 59, 58, 123456, tzinfo=UTC)


def test_from_payload_accepts_a_newer_minor_version_with_extra_keys(wire_payload):
    wire_payload.update(schema_version="1.7", added_in_1_7="something new", vcpus=4)

    event = LifecycleEvent.from_payload(wire_payload)

    assert event.schema_version == "1.7"
    assert event.instance_uuid == wire_payload["instance_uuid"]
    assert event.transition is Transition.STOPPED


# -- from_payload rejects what breaks the contract ------------------------------


@pytest.mark.parametrize("key", sorted(PAYLOAD_KEYS - OPTIONAL_KEYS))
def test_from_payload_rejects_a_missing_key_naming_it(wire_payload, key):
    del wire_payload[key]

    with pytest.raises(MalformedEvent, match=key):
        LifecycleEvent.from_payload(wire_payload)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("power_state", True),  # bool is an int in Python, not on the wire
        ("power_state", "4"),
        ("seq", "42"),
        ("seq", True),
        ("seq", 42.0),
        ("seq", None),
        ("resync", 1),
        ("resync", "false"),
        ("event_id", 17),
        ("event_id", ""),  # consumers dedupe on it
        ("host", None),
        ("instance_uuid", ["6e9a4d5c"]),
        ("instance_name", 1),
        ("reason", None),
        ("detail", 0),
        ("hypervisor", {}),
        ("occurred_at", 1709251198.123456),
        ("schema_version", 1.0),
        ("schema_version", "2.0"),  # another major version
        ("transition", 1),
        ("transition", "exploded"),  # unknown name
        ("power_state", 2),  # not a nova power state
        ("power_state", 5),
        ("occurred_at", "2024-02-29T23:59:58.123456"),
        ("occurred_at", "yesterday"),
    ],
)
def test_from_payload_rejects_a_bad_value_naming_the_field(wire_payload, key, value):
    wire_payload[key] = value

    with pytest.raises(MalformedEvent, match=key):
        LifecycleEvent.from_payload(wire_payload)


@pytest.mark.parametrize("payload", [None, [], "stopped", 42])
def test_from_payload_rejects_a_payload_that_is_not_an_object(payload):
    with pytest.raises(MalformedEvent):
        LifecycleEvent.from_payload(payload)


# -- PowerState, Transition -------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "nova_value"),
    # nova.compute.power_state, nova's published constants.
    [
        (PowerState.NOSTATE, 0),
        (PowerState.RUNNING, 1),
        (PowerState.PAUSED, 3),
        (PowerState.SHUTDOWN, 4),
        (PowerState.CRASHED, 6),
        (PowerState.SUSPENDED, 7),
    ],
)
def test_power_state_values_are_novas(state, nova_value):
    assert state == nova_value


@pytest.mark.parametrize(
    "name",
    # nova.virt.event's EVENT_LIFECYCLE_* names, lower case, and the wire contract's "crashed".
    [
        "started",
        "stopped",
        "paused",
        "resumed",
        "suspended",
        "postcopy_started",
        "migration_completed",
        "crashed",
    ],
)
def test_every_nova_transition_name_is_a_transition(name):
    assert Transition(name).value == name


# -- from_observation ---------------------------------------------------------------


def test_from_observation_stamps_host_hypervisor_seq_and_keeps_the_observation():
    observation = Observation(
        instance_uuid="6e9a4d5c-1b2f-4a8e-b3c7-d0e1f2a3b4c5",
        instance_name="instance-0000002a",
        transition=Transition.SHUTTING_DOWN,
        power_state=PowerState.RUNNING,
        reason="SHUTDOWN",
        detail="GUEST",
        occurred_at=datetime.datetime(2024, 2, 29, 23, 59, 58, 123456, tzinfo=UTC),
    )

    event = LifecycleEvent.from_observation(
        observation, host="compute1", hypervisor="libvirt", seq=9, resync=True
    )

    assert (event.host, event.hypervisor, event.seq, event.resync) == (
        "compute1",
        "libvirt",
        9,
        True,
    )
    for field in dataclasses.fields(Observation):
        assert getattr(event, field.name) == getattr(observation, field.name)


def test_from_observation_gives_a_fresh_event_id_each_time():
    observation = Observation(
        instance_uuid="6e9a4d5c-1b2f-4a8e-b3c7-d0e1f2a3b4c5",
        instance_name="instance-0000002a",
        transition=Transition.STARTED,
        power_state=PowerState.RUNNING,
        reason="STARTED",
        detail="BOOTED",
        occurred_at=datetime.datetime(2024, 2, 29, tzinfo=UTC),
    )

    events = [
        LifecycleEvent.from_observation(observation, host="c1", hypervisor="libvirt", seq=1)
        for _ in range(100)
    ]
    ids = {event.event_id for event in events}

    assert len(ids) == 100
    assert "" not in ids
