"""A consumer's input path: frames read in bulk, py-amqp's messages handed over as they are.

What a consumer pays per message before its own work, cut to what is needed:

- :class:`~hypervisor_notifier.amqpframes.FrameReader`: frames read in bulk
  (one ``recv`` for many messages, where py-amqp makes three per frame) and
  handed to py-amqp's own frame handler. While it runs it owns the socket's
  input; :meth:`~hypervisor_notifier.amqpframes.FrameReader.release` gives
  what it read but did not hand over back to py-amqp's transport, so the
  synchronous calls after it (cancelling the consumer, closing the channel)
  read on where it stopped.
- :class:`RawConsumer`: kombu's Consumer, without a kombu Message per message.
- :class:`BulkConsumerMixin`: kombu's ConsumerMixin loop (its context, hooks,
  stop flag and heartbeats) draining through a FrameReader.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import amqp
import kombu
import kombu.mixins

from hypervisor_notifier.amqpframes import FrameReader

__all__ = ["BulkConsumerMixin", "FrameReader", "RawConsumer"]


class RawConsumer(kombu.Consumer):
    """kombu's Consumer (declare, bind, qos, consume, cancel) handing over py-amqp's messages.

    ``on_message`` gets the transport's :class:`amqp.Message` as it came off
    the socket (``body``, ``channel``, ``delivery_info``): no kombu Message is
    built and nothing is decoded, which is most of kombu's cost per message;
    the application decodes the body once.
    """

    def _receive_callback(self, message: amqp.Message) -> None:
        self.on_message(message)


class BulkConsumerMixin(kombu.mixins.ConsumerMixin):
    """kombu's ConsumerMixin, its loop reading frames in bulk (:class:`FrameReader`).

    Everything else is kombu's: the connection (:meth:`establish_connection`,
    failover), :meth:`get_consumers`, ``on_consume_ready``/``on_consume_end``,
    ``on_iteration`` (called before each wait), ``should_stop``, heartbeats.
    Only the py-amqp transport is supported (the one kombu uses for
    ``amqp://`` and ``amqps://``).
    """

    _reader: FrameReader | None = None

    def consume(
        self, limit: int | None = None, timeout: float | None = None, safety_interval: float = 1,
        **kwargs: Any,
    ) -> Iterator[None]:  # fmt: skip
        """Consume until ``should_stop``; yields each time frames were handled.

        ``limit`` and ``timeout`` (kombu's, for tests of its own) are not
        supported: this loop runs until stopped or the connection fails.
        """
        if limit is not None or timeout is not None:
            raise TypeError("limit and timeout are not supported")
        with self.consumer_context(**kwargs) as (connection, _channel, _consumers):
            self._reader = reader = FrameReader(connection.connection)
            try:
                while not self.should_stop:
                    self.on_iteration()
                    try:
                        reader.drain(safety_interval)
                    except TimeoutError:
                        connection.heartbeat_check()
                    except OSError:
                        if not self.should_stop:
                            raise
                    else:
                        yield
            finally:
                # Before kombu cancels the consumer, which reads its answer.
                self._reader = None
                reader.release()

    def message_waiting(self) -> bool:
        """Whether the loop has a frame to handle without waiting for the network."""
        return self._reader is not None and self._reader.waiting()
