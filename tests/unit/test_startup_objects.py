"""Start-up objects are frozen out of collection passes; later garbage is still collected."""

from __future__ import annotations

import gc
import weakref

import pytest

from hypervisor_notifier.notifier import startup_objects


class Node:
    """An object in a reference cycle: only the cyclic collector frees it."""

    def __init__(self) -> None:
        self.other: Node | None = None


@pytest.fixture
def thawed():
    """Nothing frozen before the test, nor after it (the freeze is process-wide)."""
    gc.unfreeze()
    try:
        yield
    finally:
        gc.unfreeze()


def cycle() -> weakref.ref[Node]:
    a, b = Node(), Node()
    a.other, b.other = b, a
    return weakref.ref(a)


def test_the_objects_alive_at_start_are_frozen_and_the_collector_stays_on(thawed):
    kept = Node()
    tracked = len(gc.get_objects())

    count = startup_objects.freeze()

    assert count == gc.get_freeze_count() >= tracked // 2
    assert gc.isenabled()
    # Left out of the passes: a full collection walks none of them.
    assert not any(obj is kept for obj in gc.get_objects())


def test_garbage_left_by_start_up_is_collected_before_the_freeze(thawed):
    lost = cycle()

    startup_objects.freeze()

    assert lost() is None


def test_cycles_made_after_the_freeze_are_still_collected(thawed):
    startup_objects.freeze()
    later = cycle()

    gc.collect()

    assert later() is None
