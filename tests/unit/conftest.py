"""Builders shared by the unit tests.

``make_event(**overrides)`` (a valid LifecycleEvent with fresh ids) lives in
``tests/factories.py`` because the functional tests use it too; the unit
tests import it from there rather than keep a second copy.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import settings

# No per-example deadline: a 2-core machine running the suite (or anything else)
# can stall any example past 200 ms; what the properties check is not speed.
settings.register_profile("hypervisor-notifier", deadline=None)
settings.load_profile("hypervisor-notifier")


@pytest.fixture
def wire_payload() -> dict[str, Any]:
    """A payload written by hand from the wire contract (doc/source/wire.rst), not by the code.

    A fresh dict for every test: free to mutate.
    """
    return {
        "schema_version": "1.0",
        "event_id": "0f2b6a1e-4c1d-4f7b-9d59-3a0c2e8f5b11",
        "host": "compute1.example.org",
        "hypervisor": "libvirt",
        "instance_uuid": "6e9a4d5c-1b2f-4a8e-b3c7-d0e1f2a3b4c5",
        "instance_name": "instance-0000002a",
        "transition": "stopped",
        "power_state": 4,  # nova.compute.power_state.SHUTDOWN
        "reason": "STOPPED",
        "detail": "SHUTDOWN",
        "occurred_at": "2024-02-29T23:59:58.123456Z",
        "seq": 42,
        "resync": False,
    }


@pytest.fixture
def started() -> Iterator[Any]:
    """``start(backend, listener)``: connect a backend; every started backend closed after."""
    backends: list[Any] = []

    def start(backend: Any, listener: Any) -> Any:
        backends.append(backend)
        backend.connect(listener)
        return backend

    yield start
    for backend in backends:
        backend.close()
