"""The frames of a persistent, mandatory ``basic.publish``, built in one go.

py-amqp builds a publish's three frames (method, content header, body) by
interpreting format strings for the method's arguments and for each
property of an ``amqp.Message``: about as much CPU per message as the
broker spends on it. The publisher's messages differ only in their body,
``message_id`` and ``timestamp`` (and the routing key, one per host), so the
method frame and the fixed properties are packed once and the rest with a
few ``struct`` calls. The bytes are exactly py-amqp's (the unit test
compares them); they go through the connection's :class:`~.framewriter.BatchingWriter`.
"""

from __future__ import annotations

import functools
import struct

#: AMQP frame types and the frame end octet.
METHOD, HEADER, BODY, FRAME_END = 1, 2, 3, b"\xce"
#: basic (class 60), publish (method 40).
BASIC, PUBLISH = 60, 40
#: Property flags, in AMQP's order: content_type, content_encoding,
#: delivery_mode, message_id, timestamp.
FLAGS = (1 << 15) | (1 << 14) | (1 << 12) | (1 << 7) | (1 << 6)
#: Octets a frame adds around its payload: type, channel, size; frame end.
OVERHEAD = 8

_FRAME = struct.Struct(">BHI")
_HEADER = struct.Struct(">HHQH")


def shortstr(text: str) -> bytes:
    """An AMQP short string (at most 255 octets of UTF-8)."""
    data = text.encode()
    if len(data) > 255:
        raise ValueError(f"{text[:40]!r}... is longer than an AMQP short string (255 octets)")
    return bytes((len(data),)) + data


@functools.lru_cache(maxsize=64)
def method_payload(exchange: str, routing_key: str) -> bytes:
    """The payload of ``basic.publish`` to ``exchange`` with ``routing_key``, mandatory."""
    # reserved short 0; exchange; routing key; bits: mandatory 1, immediate 0.
    return (
        struct.pack(">HHH", BASIC, PUBLISH, 0)
        + shortstr(exchange)
        + shortstr(routing_key)
        + b"\x01"
    )


@functools.lru_cache(maxsize=8)
def fixed_properties(content_type: str, content_encoding: str) -> bytes:
    """content_type, content_encoding and delivery_mode 2 (persistent), packed."""
    return shortstr(content_type) + shortstr(content_encoding) + b"\x02"


def frame(kind: int, channel: int, payload: bytes) -> bytes:
    """One frame around ``payload``."""
    return _FRAME.pack(kind, channel, len(payload)) + payload + FRAME_END


def publish(
    channel: int,
    frame_max: int,
    method: bytes,
    properties: bytes,
    message_id: str,
    timestamp: int,
    body: bytes,
) -> bytes:
    """The frames of one message, ready to write.

    Arguments:
        channel: The channel's number.
        frame_max: The connection's negotiated largest frame; a longer body is split.
        method: :func:`method_payload`.
        properties: :func:`fixed_properties`.
        message_id: The message's ``message_id`` property.
        timestamp: Its ``timestamp`` property (seconds since the epoch).
        body: The body.

    """
    header = (
        _HEADER.pack(BASIC, 0, len(body), FLAGS)
        + properties
        + shortstr(message_id)
        + timestamp.to_bytes(8, "big")
    )
    parts = [frame(METHOD, channel, method), frame(HEADER, channel, header)]
    chunk = frame_max - OVERHEAD
    parts += [frame(BODY, channel, body[i : i + chunk]) for i in range(0, len(body), chunk)]
    return b"".join(parts)
