"""The real broker for every test: its URL, unique names, the one cleanup of what a test declared.

Imports no test framework, so pytest fixtures (``tests/functional``) and
``fixtures.Fixture`` classes (``tests/nova``, ``tests/e2e``) share it.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator

import amqp

from hypervisor_notifier.transport_url import TransportURL

BROKER_URL = os.environ.get("HN_TRANSPORT_URL", "rabbit://guest:guest@127.0.0.1:5672/")


def unique(prefix: str) -> str:
    """A name no other test (or run) uses: ``prefix`` and 10 random hex digits."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@contextlib.contextmanager
def connection() -> Iterator[amqp.Connection]:
    """A connection to the broker of :data:`BROKER_URL` (its first host)."""
    broker = TransportURL.parse(BROKER_URL).hosts[0]
    conn = amqp.Connection(
        f"{broker.hostname}:{broker.port}", userid=broker.username, password=broker.password
    )
    conn.connect()
    try:
        yield conn
    finally:
        conn.close()


def delete_bus(exchange: str, queues: list[str]) -> None:
    """Delete a test's queues and exchange on the real broker (missing ones are fine)."""
    with connection() as conn:
        channel = conn.channel()
        for name in queues:
            channel.queue_delete(name)
        channel.exchange_delete(exchange)
