"""Reading ``--since`` for the history stream."""

from __future__ import annotations

import datetime

import pytest

from hypervisor_notifier.consumer.history import parse_since

NOW = datetime.datetime(2026, 11, 29, 12, 0, tzinfo=datetime.timezone.utc)


@pytest.mark.parametrize(
    ("text", "ago"),
    [("30s", 30), ("10m", 600), ("2h", 7200), ("7d", 7 * 86400)],
)
def test_a_duration_is_that_long_before_now(text, ago):
    assert parse_since(text, NOW) == NOW - datetime.timedelta(seconds=ago)


def test_an_iso_time_without_a_zone_is_utc():
    assert parse_since("2026-11-29T11:00:00", NOW) == NOW - datetime.timedelta(hours=1)
    assert parse_since("2026-11-29T12:00:00+01:00", NOW) == NOW - datetime.timedelta(hours=1)


@pytest.mark.parametrize("text", ["", "10", "m", "10y", "yesterday", "-5m"])
def test_anything_else_is_refused_with_the_accepted_forms(text):
    with pytest.raises(ValueError, match="neither 10m/2h/7d nor an ISO 8601 time"):
        parse_since(text, NOW)
