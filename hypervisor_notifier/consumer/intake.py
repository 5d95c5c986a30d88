"""A consumer's input path: frames read in bulk, py-amqp's messages handed over as they are.

What a consumer pays per message before its own work, cut to what is needed:

- :class:`~hypervisor_notifier.amqpframes.FrameReader`: frames read in bulk
  (one ``recv`` for many messages, where py-amqp makes three per frame) and
  handed to py-amqp's own frame handler. While it runs it owns the socket's
  input; :meth:`~hypervisor_notifier.amqpframes.FrameReader.release` gives
  what it read but did not hand over back to py-amqp's transport, so the
  synchronous calls after it (cancelling the consumer, closing the channel)
  read on where it stopped.
- A delivery read whole (its method, content header and one body frame
  buffered together, as RabbitMQ writes them) goes straight to its
  :class:`RawConsumer`'s ``on_delivery`` (channel, delivery tag, body): py-amqp
  would build a message object, parse its properties, its arguments and a
  delivery_info dict, through five calls, for a body and a tag. Anything
  else (another method, a delivery split across reads, a content encoding
  py-amqp would decode, a channel closing, a consumer of another kind) goes
  through py-amqp's frame handler as before.
- :class:`RawConsumer`: kombu's Consumer, without a kombu Message per message.
- :class:`BulkConsumerMixin`: kombu's ConsumerMixin loop (its context, hooks,
  stop flag and heartbeats) draining through a FrameReader.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from typing import Any

import amqp
import kombu
import kombu.mixins

from hypervisor_notifier.amqpframes import FRAME_END, FrameReader, frame_at

#: A Basic.Deliver method frame's payload starts with its class and method ids (60, 60).
_DELIVER = b"\x00\x3c\x00\x3c"
_METHOD, _CONTENT_HEADER, _CONTENT_BODY = 1, 2, 3
_DELIVERY_TAG = struct.Struct(">Q")
#: A content header: class id, (weight), body size, the first property flags.
_CONTENT = struct.Struct(">HxxQH")
#: Property flags: a content encoding (py-amqp then decodes the body to str), more flags.
_ENCODED, _MORE_FLAGS = 0x4000, 0x0001

#: What a :class:`RawConsumer` is handed for each message: its channel, delivery tag and body.
DeliveryCallback = Callable[[amqp.Channel, int, "bytes | str"], None]

__all__ = ["BulkConsumerMixin", "DeliveryReader", "RawConsumer"]


class DeliveryReader(FrameReader):
    """A :class:`FrameReader` that hands a delivery read whole straight to its consumer.

    Arguments:
        connection: See :class:`FrameReader`.

    """

    def _take_whole(self) -> bool:
        """See :meth:`FrameReader._take_whole`: a Basic.Deliver, when :meth:`_deliver` can."""
        return self._buffer[self._pos + 7 : self._pos + 11] == _DELIVER and self._deliver()

    def _deliver(self) -> bool:
        """Hand the Basic.Deliver at the position to its consumer's ``on_delivery``, if it can.

        It can when the delivery is read whole (method, content header, one
        body frame, of one channel, each ending as AMQP says), has no content
        encoding, and its consumer is a :class:`RawConsumer` with an
        ``on_delivery`` on an open channel. False if not: nothing was read,
        py-amqp's handler takes the frames (and names any fault).
        """
        buffer = self._buffer
        method = _frame_at(buffer, self._pos, _METHOD)
        if method is None:
            return False
        channel_id, start, end = method
        header = _frame_at(buffer, end + 1, _CONTENT_HEADER)
        if header is None or header[0] != channel_id or header[2] - header[1] < _CONTENT.size:
            return False
        body = _frame_at(buffer, header[2] + 1, _CONTENT_BODY)
        if body is None or body[0] != channel_id:
            return False
        _, size, flags = _CONTENT.unpack_from(buffer, header[1])
        tag_at = start + 5 + buffer[start + 4]  # after the consumer tag (a short string)
        if flags & (_ENCODED | _MORE_FLAGS) or size != body[2] - body[1] or tag_at + 8 > end:
            return False
        channels = self._connection.channels
        channel = channels.get(channel_id) if channels else None
        if channel is None or channel.is_closing:
            return False
        consumer_tag = buffer[start + 5 : tag_at].decode("utf-8", "surrogatepass")
        consumer = getattr(channel.callbacks.get(consumer_tag), "__self__", None)
        if not isinstance(consumer, RawConsumer) or consumer.on_delivery is None:
            return False
        self._connection.bytes_recv += 3  # one per frame, as py-amqp counts (heartbeats)
        self._pos = body[2] + 1
        (delivery_tag,) = _DELIVERY_TAG.unpack_from(buffer, tag_at)
        consumer.on_delivery(channel, delivery_tag, buffer[body[1] : body[2]])
        return True


def _frame_at(buffer: bytes, pos: int, frame_type: int) -> tuple[int, int, int] | None:
    """A whole frame of ``frame_type`` at ``pos``: (channel, payload start, payload end); or None.

    None too if it does not end as AMQP says (py-amqp's handler then refuses it).
    """
    frame = frame_at(buffer, pos)
    if frame is None or frame[0] != frame_type or buffer[frame[3]] != FRAME_END:
        return None
    return frame[1:]


class RawConsumer(kombu.Consumer):
    """kombu's Consumer (declare, bind, qos, consume, cancel) handing over what a message is.

    ``on_delivery`` gets each message's channel, delivery tag and body (bytes;
    str if py-amqp decoded a content encoding): from a :class:`FrameReader`
    straight off the buffer, or from py-amqp's :class:`amqp.Message`. No
    kombu Message is built and nothing is decoded, which is most of kombu's
    cost per message; the application decodes the body once. Without an
    ``on_delivery``, ``on_message`` gets py-amqp's message.

    Arguments:
        on_delivery: Called with (channel, delivery tag, body) of each message.
        *args, **kwargs: kombu's Consumer's.

    """

    def __init__(self, *args: Any, on_delivery: DeliveryCallback | None = None,
                 **kwargs: Any) -> None:  # fmt: skip
        super().__init__(*args, **kwargs)
        self.on_delivery = on_delivery

    def _receive_callback(self, message: amqp.Message) -> None:
        if self.on_delivery is None:
            self.on_message(message)
        else:
            self.on_delivery(message.channel, message.delivery_info["delivery_tag"], message.body)


class BulkConsumerMixin(kombu.mixins.ConsumerMixin):
    """kombu's ConsumerMixin, its loop reading frames in bulk (:class:`FrameReader`).

    Everything else is kombu's: the connection (:meth:`establish_connection`,
    failover), :meth:`get_consumers`, ``on_consume_ready``/``on_consume_end``,
    ``on_iteration`` (called before each wait), ``should_stop``, heartbeats.
    Only the py-amqp transport is supported (the one kombu uses for
    ``amqp://`` and ``amqps://``).
    """

    _reader: DeliveryReader | None = None

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
            self._reader = reader = DeliveryReader(connection.connection)
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
