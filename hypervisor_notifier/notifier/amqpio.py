"""py-amqp plumbing for the publisher: open a connection, write a publish, read what came.

The publisher decides what to send and when; this module only knows how
py-amqp does each of these without waiting where the publisher must not.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import amqp

from hypervisor_notifier import wire
from hypervisor_notifier.amqpframes import FrameReader, reads_in_bulk
from hypervisor_notifier.notifier import publishframes
from hypervisor_notifier.notifier.framewriter import BatchingWriter, FrameWriterFactory
from hypervisor_notifier.notifier.outbox import Entry
from hypervisor_notifier.tls import BrokerAccess
from hypervisor_notifier.transport_url import BrokerHost

#: Errors after which the connection is dropped and re-established.
CONNECTION_ERRORS = (OSError, amqp.exceptions.AMQPError)


def open_connection(
    access: BrokerAccess,
    broker: BrokerHost,
    *,
    name: str,
    timeout: float,
    heartbeat: int,
    frames: FrameWriterFactory,
    on_blocked: Callable[[str], None],
    on_unblocked: Callable[[], None],
) -> amqp.Connection:
    """An unconnected ``amqp.Connection`` to ``broker`` (one of ``access.url``'s hosts)."""
    return amqp.Connection(
        host=broker.address,
        userid=broker.username,
        password=broker.password,
        virtual_host=access.url.virtual_host,
        connect_timeout=timeout,
        write_timeout=timeout,
        heartbeat=heartbeat,
        client_properties={"connection_name": name},
        on_blocked=on_blocked,
        on_unblocked=on_unblocked,
        frame_writer=frames,
        ssl=access.amqp_ssl(broker),
    )


def declare_bound_queue(
    channel: amqp.Channel, queue: str, arguments: dict[str, Any], exchange: str, key: str
) -> None:
    """Declare the durable ``queue`` (with its x-``arguments``) and bind it to ``key``."""
    channel.queue_declare(queue, durable=True, auto_delete=False, arguments=arguments)
    channel.queue_bind(queue, exchange, key)


def publish(
    channel: amqp.Channel, writer: BatchingWriter, exchange: str, routing_key: str, entry: Entry
) -> None:
    """Write ``entry`` as a persistent, ``mandatory`` message (its ``message_id``: the event's).

    Its AMQP ``timestamp`` is when the event occurred: the broker then tells
    the age of a queue's oldest message (``hypervisor-events idle-queues``).
    The frames are :mod:`.publishframes`'s, the bytes py-amqp would write
    for the same ``amqp.Message``, without its per-property interpretation.
    Mandatory: a message no queue takes comes back (basic.return) instead of
    being acked. Nothing is read here: the pump reads acks and
    connection.blocked itself, once per batch.
    """
    assert entry.body is not None  # noqa: S101 - taken entries are encoded
    connection = channel.connection
    writer.write(
        publishframes.publish(
            channel.channel_id,
            connection.frame_max,
            publishframes.method_payload(exchange, routing_key),
            publishframes.fixed_properties(wire.CONTENT_TYPE, "utf-8"),
            entry.event.event_id,
            int(entry.event.occurred_at.timestamp()),
            entry.body,
        )
    )
    # As py-amqp's frame writer counts: the heartbeat sees the connection is used.
    connection.bytes_sent += 1


def drain(connection: amqp.Connection) -> None:
    """Handle every frame already received (acks, returns, heartbeats), without blocking.

    On plain TCP, what the socket holds is read at once (:class:`FrameReader`):
    one ``recv`` for the acks of a window, where py-amqp makes three per frame
    and a fourth to find nothing more; what is left of a frame not whole yet
    goes back to py-amqp's buffer, where the next read continues it.
    """
    if reads_in_bulk(connection.sock):
        reader = FrameReader(connection)
        try:
            reader.drain(0)
        except TimeoutError:
            pass  # the socket was readable but held no whole frame: its rest comes later
        finally:
            reader.release()
        return
    while True:
        try:
            connection.drain_events(timeout=0)
        except TimeoutError:
            return


def tls_pending(sock: object) -> int:
    """Bytes a TLS socket decrypted but nobody read yet (0 for a plain socket)."""
    pending = getattr(sock, "pending", None)
    return pending() if pending is not None else 0
