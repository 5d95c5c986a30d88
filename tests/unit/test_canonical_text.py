"""canonical_text writes exactly signing.canonical(to_payload()), for every kind and any values."""

from __future__ import annotations

import datetime
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hypervisor_notifier.canonical_text import canonical_text
from hypervisor_notifier.events import PowerState, Stamp, Transition
from hypervisor_notifier.faults import Fault
from hypervisor_notifier.host_events import HostChange
from hypervisor_notifier.signing import Signer, canonical
from tests.factories import make_event, make_fault, make_host_event

#: Any value a field may hold: JSON scalars (quotes, control, non-ASCII and lone
#: surrogate characters, huge ints, NaN), every enum member of the contract.
VALUES = (
    st.text(max_size=12)
    | st.integers()
    | st.booleans()
    | st.none()
    | st.floats()
    | st.sampled_from([*Transition, *PowerState, *Fault, *HostChange])
)
DETAILS = st.dictionaries(st.text(max_size=8), st.text(max_size=8) | st.integers() | st.none(),
                          max_size=4)  # fmt: skip
MOMENTS = st.datetimes(timezones=st.timezones())
KINDS = {
    "lifecycle": make_event,
    "fault": lambda: make_fault(Fault.IO_ERROR, "report"),
    "host": lambda: make_host_event(HostChange.CONNECTED),
}


def with_fields(event: Stamp, values: dict[str, object]) -> Stamp:
    """``event`` with ``values`` in its fields, unchecked: the writer must follow to_payload."""
    for key, value in values.items():
        object.__setattr__(event, key, value)
    return event


def outcome(write: Callable[[], bytes]) -> bytes | str:
    """What ``write`` returns, or the name of what it raises."""
    try:
        return write()
    except Exception as exc:  # compared, not handled
        return type(exc).__name__


@pytest.mark.parametrize("kind", KINDS)
@given(data=st.data())
def test_the_text_is_the_canonical_encoding_of_the_payload(kind, data):
    event = KINDS[kind]()
    fields = [key for key in vars(event) if key not in ("details", "occurred_at", "verified")]
    values = data.draw(st.dictionaries(st.sampled_from(fields), VALUES))
    values["details"] = data.draw(DETAILS)
    values["occurred_at"] = data.draw(MOMENTS)
    event = with_fields(event, values)

    # The same text, or the same refusal (a time at the end of the calendar cannot be in UTC).
    assert outcome(lambda: canonical_text(event).encode("ascii")) == outcome(
        lambda: canonical(event.to_payload())
    )


def test_a_time_in_another_zone_is_written_in_utc():
    plus_two = datetime.timezone(datetime.timedelta(hours=2))
    moment = datetime.datetime(2026, 1, 1, 12, tzinfo=plus_two)
    event = make_event(occurred_at=moment)

    assert '"occurred_at":"2026-01-01T10:00:00.000000Z"' in canonical_text(event)


@given(key_id=st.text(min_size=1, max_size=20), text=st.binary(max_size=64))
def test_the_signature_text_is_the_canonical_encoding_of_the_signature(key_id, text):
    signer = Signer(key_id, b"k" * 32)

    assert signer.signature_text(text).encode("ascii") == canonical(signer.signature(text))
