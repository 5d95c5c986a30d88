"""py-amqp plumbing for the publisher: open a connection, write a publish, read what came.

The publisher decides what to send and when; this module only knows how
py-amqp does each of these without waiting where the publisher must not.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import amqp

from hypervisor_notifier import wire
from hypervisor_notifier.notifier.framewriter import FrameWriterFactory
from hypervisor_notifier.notifier.outbox import Entry
from hypervisor_notifier.tls import TLSSettings
from hypervisor_notifier.transport_url import BrokerHost, TransportURL

#: Errors after which the connection is dropped and re-established.
CONNECTION_ERRORS = (OSError, amqp.exceptions.AMQPError)


def open_connection(
    url: TransportURL,
    broker: BrokerHost,
    *,
    name: str,
    timeout: float,
    heartbeat: int,
    tls: TLSSettings,
    frames: FrameWriterFactory,
    on_blocked: Callable[[str], None],
    on_unblocked: Callable[[], None],
) -> amqp.Connection:
    """An unconnected ``amqp.Connection`` to ``broker`` (one of ``url``'s hosts)."""
    return amqp.Connection(
        host=broker.address,
        userid=broker.username,
        password=broker.password,
        virtual_host=url.virtual_host,
        connect_timeout=timeout,
        write_timeout=timeout,
        heartbeat=heartbeat,
        client_properties={"connection_name": name},
        on_blocked=on_blocked,
        on_unblocked=on_unblocked,
        frame_writer=frames,
        ssl=tls.amqp_ssl(broker.hostname) if url.tls else False,
    )


def declare_bound_queue(
    channel: amqp.Channel, queue: str, arguments: dict[str, Any], exchange: str, key: str
) -> None:
    """Declare the durable ``queue`` (with its x-``arguments``) and bind it to ``key``."""
    channel.queue_declare(queue, durable=True, auto_delete=False, arguments=arguments)
    channel.queue_bind(queue, exchange, key)


def publish(channel: amqp.Channel, exchange: str, routing_key: str, entry: Entry) -> None:
    """Write ``entry`` as a persistent, ``mandatory`` message (its ``message_id``: the event's).

    Its AMQP ``timestamp`` is when the event occurred: the broker then tells
    the age of a queue's oldest message (``hypervisor-events idle-queues``).
    """
    message = amqp.Message(
        entry.body,
        content_type=wire.CONTENT_TYPE,
        content_encoding="utf-8",
        delivery_mode=2,
        message_id=entry.event.event_id,
        timestamp=int(entry.event.occurred_at.timestamp()),
    )
    # basic_publish would also poll the socket before each message; the pump
    # reads acks and connection.blocked itself, once per batch. Mandatory: a
    # message no queue takes comes back (basic.return) instead of being acked.
    channel.send_method(
        amqp.spec.Basic.Publish, "Bssbb", (0, exchange, routing_key, True, False), message
    )


def drain(connection: amqp.Connection) -> None:
    """Handle every frame already received (acks, returns, heartbeats), without blocking."""
    while True:
        try:
            connection.drain_events(timeout=0)
        except TimeoutError:
            return


def tls_pending(sock: object) -> int:
    """Bytes a TLS socket decrypted but nobody read yet (0 for a plain socket)."""
    pending = getattr(sock, "pending", None)
    return pending() if pending is not None else 0
