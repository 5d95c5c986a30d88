"""The ceiling: a raw py-amqp publisher with pipelined confirms, nothing else.

Not a benchmark of its own: ``throughput.py`` runs it beside the service's
path, in the same run, with the same bodies and the same confirm window.
It does what any publisher must do to know that the broker has a message
and nothing more: persistent messages on a durable topic exchange and queue,
publisher confirms, at most ``window`` unconfirmed, the frames of each
refill of the window written at once (as the service's publisher does), and
the confirmed tags tracked in O(1) per tag (a bitmap and a low-water mark:
a ``multiple`` ack marks each tag once). No outbox, no encoding, no resend.
Given each message's ``message_id`` and ``timestamp`` and ``mandatory``, it
sends what the service sends (the wire contract's message), for a second
ceiling: the broker's cost of those properties is measurable.
"""

from __future__ import annotations

import select
import time

import amqp
from harness import BROKER

from hypervisor_notifier import wire
from hypervisor_notifier.notifier.framewriter import FrameWriterFactory


class ConfirmCount:
    """Counts confirmed delivery tags; ``multiple`` acks mark each tag once.

    Arguments:
        size: The largest tag that will be published.

    """

    def __init__(self, size: int) -> None:
        self._acked = bytearray(size + 2)
        self._low = 1
        self.confirmed = 0
        self.nacked = 0

    def ack(self, tag: int, multiple: bool) -> None:
        first = self._low if multiple else tag
        for each in range(first, tag + 1):
            if not self._acked[each]:
                self._acked[each] = 1
                self.confirmed += 1
        while self._acked[self._low]:
            self._low += 1

    def nack(self, tag: int, multiple: bool) -> None:
        self.nacked += 1
        self.ack(tag, multiple)


def burst(
    exchange: str,
    queue: str,
    routing_key: str,
    bodies: list[bytes],
    window: int,
    properties: list[dict[str, object]] | None = None,
    mandatory: bool = False,
) -> float:
    """Declare, publish ``bodies`` with at most ``window`` unconfirmed; seconds to the last ack.

    ``properties``: each message's own AMQP properties (``message_id``...), if any.
    Raises RuntimeError if the broker nacked any.
    """
    frames = FrameWriterFactory()
    connection = amqp.Connection(**BROKER, frame_writer=frames)
    connection.connect()
    try:
        channel = connection.channel()
        channel.exchange_declare(exchange, "topic", durable=True, auto_delete=False)
        channel.queue_declare(queue, durable=True, auto_delete=False)
        channel.queue_bind(queue, exchange, routing_key)
        channel.confirm_select()
        count = ConfirmCount(len(bodies))
        channel.events["basic_ack"].add(count.ack)
        channel.events["basic_nack"].add(count.nack)
        started = time.perf_counter()
        sent = 0
        while count.confirmed < len(bodies):
            room = min(window - (sent - count.confirmed), len(bodies) - sent)
            if room > 0:
                assert frames.writer is not None
                with frames.writer.batch():
                    for index in range(sent, sent + room):
                        message = amqp.Message(
                            bodies[index],
                            content_type=wire.CONTENT_TYPE,
                            content_encoding="utf-8",
                            delivery_mode=2,
                            **(properties[index] if properties else {}),
                        )
                        channel.send_method(
                            amqp.spec.Basic.Publish,
                            "Bssbb",
                            (0, exchange, routing_key, mandatory, False),
                            message,
                        )
                sent += room
            select.select([connection.sock], [], [], 1.0)
            while True:
                try:
                    connection.drain_events(timeout=0)
                except TimeoutError:
                    break
        seconds = time.perf_counter() - started
        if count.nacked:
            raise RuntimeError(f"the broker nacked {count.nacked} messages")
        return seconds
    finally:
        connection.close()
