"""BatchingWriter: frames written at once outside a batch, in one write for a batch."""

from __future__ import annotations

import pytest

from hypervisor_notifier.notifier.framewriter import BatchingWriter


class Transport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []

    def write(self, data) -> None:
        self.writes.append(bytes(data))


def test_outside_a_batch_each_frame_is_written_at_once():
    transport = Transport()
    writer = BatchingWriter(transport)
    writer.write(b"one")
    writer.write(b"two")
    assert transport.writes == [b"one", b"two"]


def test_a_batch_is_one_write_of_its_frames_in_order_even_from_a_reused_buffer():
    transport = Transport()
    writer = BatchingWriter(transport)
    buffer = bytearray(b"aaa")  # py-amqp reuses one buffer for every frame
    with writer.batch():
        writer.write(memoryview(buffer))
        buffer[:] = b"bbb"
        writer.write(memoryview(buffer))
        assert transport.writes == []
    assert transport.writes == [b"aaabbb"]


def test_frames_gathered_before_an_error_are_still_written():
    transport = Transport()
    writer = BatchingWriter(transport)
    with pytest.raises(RuntimeError), writer.batch():
        writer.write(b"frame")
        raise RuntimeError("encoding the next message failed")
    assert transport.writes == [b"frame"]
    writer.write(b"after")
    assert transport.writes == [b"frame", b"after"]
