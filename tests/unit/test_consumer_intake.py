"""Frames read in bulk: handed to py-amqp whole and in order, whatever the socket's chunks.

A real socket pair carries the bytes; py-amqp's side (its transport's read
buffer and frame handler) is a recorder. The real py-amqp behind it is
exercised by the functional tests of the Subscriber and the publisher. Each
test runs on a plain socket (read with a non-blocking ``recv``) and on one
of another type (TLS, eventlet's: read under a timeout set on the socket).
"""

from __future__ import annotations

import socket
import struct
import threading

import amqp.exceptions
import pytest

from hypervisor_notifier.amqpframes import FrameReader
from hypervisor_notifier.notifier.amqpio import drain


def frame(frame_type: int, channel: int, payload: bytes, end: int = 0xCE) -> bytes:
    return struct.pack(">BHI", frame_type, channel, len(payload)) + payload + bytes([end])


class Transport:
    def __init__(self, sock: socket.socket, read_ahead: bytes = b"") -> None:
        self.sock = sock
        self._read_buffer = read_ahead
        self.connected = True


class Connection:
    """py-amqp's connection as the reader uses it: transport, sock, on_inbound_frame."""

    def __init__(self, sock: socket.socket, read_ahead: bytes = b"") -> None:
        self.transport = Transport(sock, read_ahead)
        self.sock = sock
        self.frames: list[tuple[int, int, bytes]] = []
        self.fail_on: bytes | None = None

    def on_inbound_frame(self, received: tuple[int, int, bytes]) -> None:
        if received[2] == self.fail_on:
            raise RuntimeError("the application's callback failed")
        self.frames.append(received)


class OtherSocket(socket.socket):
    """A socket of another type than ``socket.socket``, as a TLS or a green one is."""


@pytest.fixture(params=["plain", "other"])
def pair(request):
    ours, broker = socket.socketpair()
    if request.param == "other":
        ours = OtherSocket(ours.family, ours.type, fileno=ours.detach())
    yield ours, broker
    ours.close()
    broker.close()


FRAMES = [(1, 1, b"method"), (2, 1, b"header" * 3), (3, 1, b"b" * 300), (8, 0, b"")]
WIRE = b"".join(frame(*f) for f in FRAMES)


@pytest.mark.parametrize("chunk", [1, 2, 7, 8, 13, 100, 4096, len(WIRE)])
def test_frames_cut_anywhere_by_the_network_are_handed_over_whole_and_in_order(pair, chunk):
    ours, broker = pair
    connection = Connection(ours)
    reader = FrameReader(connection)  # type: ignore[arg-type]

    for start in range(0, len(WIRE), chunk):
        broker.sendall(WIRE[start : start + chunk])
        if start + chunk < len(WIRE):
            # A frame not yet complete is kept, not handed over, not lost.
            with pytest.raises(socket.timeout):
                while True:
                    reader.drain(0.001)
    while len(connection.frames) < len(FRAMES):
        reader.drain(5)

    assert connection.frames == FRAMES


def test_a_frame_larger_than_one_read_is_read_whole(pair):
    ours, broker = pair
    connection = Connection(ours)
    reader = FrameReader(connection)  # type: ignore[arg-type]
    big = (3, 1, bytes(range(256)) * 1000)  # 256 kB: several reads
    sender = threading.Thread(target=broker.sendall, args=(frame(*big) + frame(1, 1, b"m"),))
    sender.start()

    while len(connection.frames) < 2:
        reader.drain(5)
    sender.join()

    assert connection.frames == [big, (1, 1, b"m")]


def test_what_py_amqp_had_read_ahead_comes_first(pair):
    ours, broker = pair
    connection = Connection(ours, read_ahead=frame(1, 1, b"first")[:5])
    reader = FrameReader(connection)  # type: ignore[arg-type]
    broker.sendall(frame(1, 1, b"first")[5:] + frame(1, 1, b"second"))

    while len(connection.frames) < 2:
        reader.drain(5)

    assert [payload for _, _, payload in connection.frames] == [b"first", b"second"]


def test_after_a_callback_fails_the_frames_not_handed_over_go_back_to_py_amqp(pair):
    ours, broker = pair
    connection = Connection(ours)
    connection.fail_on = b"two"
    reader = FrameReader(connection)  # type: ignore[arg-type]
    rest = frame(1, 1, b"three") + frame(1, 1, b"fo")[:6]
    broker.sendall(frame(1, 1, b"one") + frame(1, 1, b"two") + rest)

    with pytest.raises(RuntimeError):
        while True:
            reader.drain(5)
    reader.release()

    # py-amqp reads on from the frame after the one that failed (cancel, close...).
    assert [payload for _, _, payload in connection.frames] == [b"one"]
    assert connection.transport._read_buffer == rest


def test_waiting_says_whether_a_frame_can_be_handled_without_blocking(pair):
    ours, broker = pair
    connection = Connection(ours)
    reader = FrameReader(connection)  # type: ignore[arg-type]
    assert not reader.waiting()

    broker.sendall(frame(1, 1, b"one") + frame(1, 1, b"two")[:4])
    assert reader.waiting()  # bytes on the socket
    connection.fail_on = b"one"
    with pytest.raises(RuntimeError):
        reader.drain(5)
    assert not reader.waiting(), "only part of a frame is buffered, the socket is empty"


def test_a_frame_that_does_not_end_as_amqp_says_is_refused(pair):
    ours, broker = pair
    reader = FrameReader(Connection(ours))  # type: ignore[arg-type]
    broker.sendall(frame(1, 1, b"method", end=0x00))

    with pytest.raises(amqp.exceptions.UnexpectedFrame):
        reader.drain(5)


def test_a_connection_closed_by_the_broker_is_an_error_and_marks_the_transport(pair):
    ours, broker = pair
    connection = Connection(ours)
    reader = FrameReader(connection)  # type: ignore[arg-type]
    broker.close()

    with pytest.raises(OSError, match="closed"):
        reader.drain(5)
    assert connection.transport.connected is False


def test_the_publisher_reads_every_whole_frame_at_once_and_keeps_a_partial_one():
    # Plain TCP only: on another socket the publisher lets py-amqp read (drain_events).
    ours, broker = socket.socketpair()
    with ours, broker:
        connection = Connection(ours)
        acks = [frame(1, 1, b"ack%d" % n) for n in range(5)]
        broker.sendall(b"".join(acks[:4]) + acks[4][:6])
        while len(connection.frames) < 4:
            drain(connection)  # type: ignore[arg-type]
        drain(connection)  # type: ignore[arg-type] # nothing more: returns, keeps the part

        broker.sendall(acks[4][6:])
        while len(connection.frames) < 5:
            drain(connection)  # type: ignore[arg-type]

    assert [payload for _, _, payload in connection.frames] == [b"ack%d" % n for n in range(5)]
    assert connection.transport._read_buffer == b""
