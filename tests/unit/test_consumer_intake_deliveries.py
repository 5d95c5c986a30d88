"""Deliveries read whole skip py-amqp's message: the same channel, tag and body, in order.

The frames are py-amqp's own encoding of Basic.Deliver, its content header
and body; py-amqp's real connection, frame handler and channel take every
frame the reader does not hand straight to the consumer. Whatever the
network's chunks and whatever the messages (a content encoding, a body in
two frames, no body, a consumer that is not a RawConsumer, heartbeats
between them), each consumer gets what py-amqp alone would have given it,
in the order sent, once.
"""

from __future__ import annotations

import itertools
import struct
from typing import Any

import amqp
import amqp.method_framing
import amqp.serialization
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hypervisor_notifier.consumer.intake import DeliveryReader, RawConsumer

CHANNEL = 1
OURS, PLAIN = "ctag-ours", "ctag-plain"
HEARTBEAT = struct.pack(">BHI", 8, 0, 0) + b"\xce"


def frame(frame_type: int, payload: bytes, channel: int = CHANNEL) -> bytes:
    return struct.pack(">BHI", frame_type, channel, len(payload)) + payload + b"\xce"


def delivery(consumer_tag: str, tag: int, body: bytes, encoding: str | None = None,
             body_frames: int = 1) -> bytes:  # fmt: skip
    """A Basic.Deliver's frames as RabbitMQ writes them (py-amqp's own serialization)."""
    args = amqp.serialization.dumps("sLbss", [consumer_tag, tag, False, "x", "k"])
    method = frame(1, struct.pack(">HH", 60, 60) + args)
    properties = {"content_type": "application/json", "delivery_mode": 2}
    if encoding is not None:
        properties["content_encoding"] = encoding
    message = amqp.Message(body, **properties)
    header = frame(2, struct.pack(">HHQ", 60, 0, len(body)) + message._serialize_properties())
    cut = len(body) // 2 if body_frames == 2 else len(body)
    parts = [body[:cut], body[cut:]] if body_frames == 2 else [body] if body else []
    return method + header + b"".join(frame(3, part) for part in parts)


class ChunkedSocket:
    """The reader's socket: hands over the given chunks one per recv, then times out."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks

    def gettimeout(self) -> float | None:
        return None

    def settimeout(self, _timeout: float | None) -> None:
        pass

    def recv(self, _size: int) -> bytes:
        if not self.chunks:
            raise TimeoutError()
        return self.chunks.pop(0)


class Transport:
    def __init__(self, sock: ChunkedSocket) -> None:
        self.sock = sock
        self._read_buffer = b""
        self.connected = True


class Broker:
    """py-amqp's real connection and channel 1, with our consumer and a plain callback on it."""

    def __init__(self) -> None:
        self.received: list[tuple[str, Any, int, bytes | str]] = []
        self.connection = amqp.Connection(host="127.0.0.1:1")
        self.connection.on_inbound_frame = amqp.method_framing.frame_handler(
            self.connection, self.connection.on_inbound_method
        )
        self.channel = amqp.Channel(self.connection, channel_id=CHANNEL)
        consumer = RawConsumer(self.channel, queues=[], auto_declare=False,
                               on_delivery=self.on_delivery)  # fmt: skip
        self.channel.callbacks[OURS] = consumer._receive_callback
        self.channel.callbacks[PLAIN] = self.on_message

    def on_delivery(self, channel: Any, tag: int, body: bytes | str) -> None:
        self.received.append(("ours", channel, tag, body))

    def on_message(self, message: amqp.Message) -> None:
        self.received.append(("plain", message.channel, message.delivery_tag, message.body))

    def read(self, chunks: list[bytes]) -> None:
        sock = ChunkedSocket(list(chunks))
        self.connection.transport = Transport(sock)  # type: ignore[assignment]
        reader = DeliveryReader(self.connection)  # the real connection's sock is its transport's
        while True:
            try:
                reader.drain(0)
            except TimeoutError:  # every chunk read, no whole frame left
                return


MESSAGES = st.lists(
    st.tuples(
        st.sampled_from([OURS, PLAIN]),
        st.binary(max_size=40),
        st.sampled_from([None, "utf-8"]),
        st.sampled_from([1, 2]),
        st.booleans(),  # a heartbeat after it
    ),
    max_size=6,
)


def decoded(body: bytes, encoding: str | None) -> bytes | str:
    """The body as py-amqp hands it over: decoded if it has a content encoding that fits."""
    if not body:
        return ""  # no body frame: py-amqp's message keeps its default body
    try:
        return body.decode(encoding) if encoding else body
    except UnicodeDecodeError:
        return body


@settings(max_examples=300)
@given(messages=MESSAGES, cuts=st.lists(st.integers(min_value=0, max_value=600), max_size=8))
def test_each_consumer_gets_every_delivery_as_py_amqp_gives_it_in_order_whatever_the_chunks(
    messages, cuts
):
    broker = Broker()
    wire, expected, frames = b"", [], 0
    for tag, (consumer, body, encoding, body_frames, heartbeat) in enumerate(messages, 1):
        wire += delivery(consumer, tag, body, encoding, body_frames if body else 0)
        frames += 2 + (body_frames if body else 0)
        if heartbeat:
            wire += HEARTBEAT
            frames += 1
        expected.append(("ours" if consumer == OURS else "plain", broker.channel, tag,
                         decoded(body, encoding)))  # fmt: skip
    points = sorted({min(cut, len(wire)) for cut in cuts} | {0, len(wire)})
    chunks = [wire[a:b] for a, b in itertools.pairwise(points) if b > a]

    broker.read(chunks)

    assert broker.received == expected
    # Every frame counted for heartbeats, whichever path took it.
    assert broker.connection.bytes_recv == frames


def test_a_delivery_read_whole_reaches_its_consumer_without_py_amqp():
    broker = Broker()
    handed: list[object] = []
    broker.connection.on_inbound_frame = handed.append

    broker.read([delivery(OURS, 7, b'{"a": 1}') + delivery(OURS, 8, b"{}")])

    assert broker.received == [("ours", broker.channel, 7, b'{"a": 1}'),
                               ("ours", broker.channel, 8, b"{}")]  # fmt: skip
    assert handed == []
    assert broker.connection.bytes_recv == 6


@pytest.mark.parametrize(
    "wire",
    [
        delivery(OURS, 1, b"body", encoding="utf-8"),  # py-amqp decodes it
        delivery(OURS, 1, b"body", body_frames=2),
        delivery(PLAIN, 1, b"body"),  # not a RawConsumer's
        delivery(OURS, 1, b"body")[:-3],  # not read whole
    ],
    ids=["encoded", "two body frames", "plain callback", "incomplete"],
)
def test_anything_else_goes_through_py_amqp_frame_by_frame(wire):
    broker = Broker()
    handed: list[object] = []
    broker.connection.on_inbound_frame = handed.append

    broker.read([wire])

    assert broker.received == []
    assert handed and handed[0][0] == 1  # the method frame first


def test_a_closing_channels_delivery_is_ignored_as_py_amqp_ignores_it():
    broker = Broker()
    broker.channel.is_closing = True

    broker.read([delivery(OURS, 1, b"body") + delivery(OURS, 2, b"body")])

    assert broker.received == []
    assert broker.connection.bytes_recv == 6


def test_a_failing_consumer_leaves_the_later_deliveries_for_py_amqp():
    broker = Broker()

    def fail(*_args: object) -> None:
        raise RuntimeError("the application's callback failed")

    broker.channel.callbacks[OURS].__self__.on_delivery = fail
    first, second = delivery(OURS, 1, b"one"), delivery(OURS, 2, b"two")
    broker.connection.transport = Transport(ChunkedSocket([first + second]))
    reader = DeliveryReader(broker.connection)

    with pytest.raises(RuntimeError):
        reader.drain(0)
    reader.release()

    assert broker.connection.transport._read_buffer == second


def test_a_raw_consumer_without_on_delivery_hands_py_amqps_message_to_on_message():
    broker = Broker()
    messages: list[amqp.Message] = []
    raw = RawConsumer(broker.channel, queues=[], auto_declare=False, on_message=messages.append)
    broker.channel.callbacks[OURS] = raw._receive_callback

    broker.read([delivery(OURS, 3, b"body")])

    assert [(m.delivery_tag, m.body) for m in messages] == [(3, b"body")]
