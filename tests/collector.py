"""A subscriber callback that records events and lets a test wait for them.

Needs no test framework: the pytest suites and the unittest-based end-to-end
suite share it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from hypervisor_notifier.events import LifecycleEvent
from tests.service_process import TIMEOUT


class Collector:
    """A subscriber callback that records events and lets a test wait for them."""

    def __init__(self) -> None:
        self.events: list[LifecycleEvent] = []
        self._changed = threading.Condition()

    def __call__(self, event: LifecycleEvent) -> None:
        with self._changed:
            self.events.append(event)
            self._changed.notify_all()

    def wait_for(
        self, predicate: Callable[[LifecycleEvent], bool], timeout: float = TIMEOUT
    ) -> LifecycleEvent:
        """Wait for the first received event matching ``predicate``."""
        with self._changed:
            found: list[LifecycleEvent] = []

            def match() -> bool:
                found[:] = [event for event in self.events if predicate(event)]
                return bool(found)

            if not self._changed.wait_for(match, timeout):
                raise AssertionError(f"no matching event in {timeout} s; got {self.events}")
            return found[0]

    def wait_for_count(self, count: int, timeout: float = TIMEOUT) -> bool:
        """Wait until ``count`` events were received; whether they were."""
        with self._changed:
            return self._changed.wait_for(lambda: len(self.events) >= count, timeout)

    def of(self, instance_uuid: str, *, resync: bool | None = None) -> list[LifecycleEvent]:
        """The events received for one instance (optionally only resync or pushed ones)."""
        with self._changed:
            return [
                event
                for event in self.events
                if event.instance_uuid == instance_uuid
                and (resync is None or event.resync is resync)
            ]
