"""The publisher's frames are byte for byte what py-amqp writes for the same message."""

from __future__ import annotations

import amqp
import pytest
from amqp import method_framing
from amqp.serialization import dumps

from hypervisor_notifier import wire
from hypervisor_notifier.notifier import publishframes


class Connection:
    """What py-amqp's frame writer reads of a connection."""

    def __init__(self, frame_max: int) -> None:
        self.frame_max = frame_max
        self.bytes_sent = 0


def amqp_frames(channel: int, frame_max: int, exchange: str, key: str, **message) -> bytes:
    """The bytes py-amqp's frame writer writes for a mandatory publish of ``message``."""
    written: list[bytes] = []

    class Transport:
        def write(self, data) -> None:
            written.append(bytes(data))

    write_frame = method_framing.frame_writer(Connection(frame_max), Transport())
    args = dumps("Bssbb", (0, exchange, key, True, False))
    body = message.pop("body")
    write_frame(1, channel, amqp.spec.Basic.Publish, args, amqp.Message(body, **message))
    return b"".join(written)


def our_frames(channel: int, frame_max: int, exchange: str, key: str, **message) -> bytes:
    return publishframes.publish(
        channel,
        frame_max,
        publishframes.method_payload(exchange, key),
        publishframes.fixed_properties(message["content_type"], message["content_encoding"]),
        message["message_id"],
        message["timestamp"],
        message["body"],
    )


@pytest.mark.parametrize(
    ("frame_max", "body", "key"),
    [
        (131072, b'{"oslo.version": "2.0"}' * 40, "hypervisor_events.compute-1.info"),
        (4096, bytes(range(256)) * 70, "hypervisor_events.h\u00f4te-\u00e9.info"),  # split body
        (4096, b"", "k"),
        (4096, b"x" * (4096 - 8), "k"),  # one full body frame, split by py-amqp's rule
    ],
)
def test_the_frames_are_py_amqps(frame_max, body, key):
    message = {
        "body": body,
        "content_type": wire.CONTENT_TYPE,
        "content_encoding": "utf-8",
        "delivery_mode": 2,
        "message_id": "9f1c3c5e-2b1d-4c55-9d0a-3f1f4b1e2a77",
        "timestamp": 1_700_000_000,
    }
    ours = our_frames(3, frame_max, "hypervisor", key, **message)
    assert ours == amqp_frames(3, frame_max, "hypervisor", key, **message)


def test_a_name_longer_than_a_short_string_is_refused():
    with pytest.raises(ValueError, match="short string"):
        publishframes.method_payload("x" * 256, "key")
