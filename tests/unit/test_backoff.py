"""Backoff: doubling delays with a cap, jitter only ever shortens, reset starts over."""

from __future__ import annotations

import pytest

from hypervisor_notifier.backoff import Backoff


def delays(backoff: Backoff, count: int) -> list[float]:
    return [backoff.next() for _ in range(count)]


def test_delays_double_up_to_the_maximum():
    backoff = Backoff(initial=0.5, maximum=5.0, jitter=0)

    assert delays(backoff, 7) == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0, 5.0]


def test_reset_starts_again_from_the_initial_delay():
    backoff = Backoff(initial=1.0, maximum=60.0, jitter=0)
    delays(backoff, 5)

    backoff.reset()

    assert delays(backoff, 3) == [1.0, 2.0, 4.0]


@pytest.mark.parametrize("jitter", [0.25, 0.5, 1.0])
def test_jitter_keeps_each_delay_within_its_range(jitter):
    backoff = Backoff(initial=1.0, maximum=8.0, jitter=jitter)
    undisturbed = [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]

    for _ in range(200):
        backoff.reset()
        for delay, full in zip(delays(backoff, len(undisturbed)), undisturbed, strict=True):
            assert full * (1 - jitter) <= delay <= full


def test_jitter_spreads_the_delays():
    # Hosts reconnecting after the same outage must not all wait the same time.
    firsts = {Backoff(initial=10.0, maximum=10.0, jitter=0.5).next() for _ in range(100)}

    assert len(firsts) > 50
    assert min(firsts) < 7.5 < max(firsts)
