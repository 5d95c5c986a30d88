"""Reading an AMQP connection's frames in bulk and handing them to py-amqp's own frame handler.

py-amqp reads each frame with three ``recv`` calls of exactly the bytes it
needs (header, payload, end octet), each under a timeout set and reset on
the socket: nine system calls and six timeout changes for every message of
a consumer, and as many for every ack a publisher reads.
:class:`FrameReader` reads whatever the socket holds (up to
:data:`READ_SIZE`), cuts it into frames and hands each to
``Connection.on_inbound_frame``, as ``drain_events`` would: methods,
content, heartbeats and errors are handled by py-amqp exactly as before.
On a plain TCP socket one ``poll`` and one non-blocking ``recv`` read what
came, without changing the socket's timeout. The Subscriber's loop
(``consumer/intake.py``) and the publisher's pump (``notifier/amqpio.py``)
read through it.
"""

from __future__ import annotations

import socket
import ssl
import struct

import amqp
import amqp.exceptions

from hypervisor_notifier.fdwait import readable

#: Bytes read at most per ``recv``: some seventy events of a few hundred bytes.
READ_SIZE = 65536
#: Frame header (type, channel, size) and the octet that ends every frame.
FRAME_HEADER = struct.Struct(">BHI")
FRAME_END = 0xCE


def frame_at(buffer: bytes, pos: int) -> tuple[int, int, int, int] | None:
    """The frame at ``pos`` if ``buffer`` holds all of it: (type, channel, payload start, end).

    ``end`` is the position of its last octet, which must be :data:`FRAME_END`
    (not checked here); None while part of the frame is still to be read.
    """
    if len(buffer) - pos < FRAME_HEADER.size:
        return None
    frame_type, channel, size = FRAME_HEADER.unpack_from(buffer, pos)
    start = pos + FRAME_HEADER.size
    end = start + size
    return None if len(buffer) <= end else (frame_type, channel, start, end)


def reads_in_bulk(sock: object) -> bool:
    """Whether ``sock`` is the standard library's own socket, read without blocking by a flag.

    Not TLS (``ssl.SSLSocket``: decrypted bytes wait in OpenSSL, no flags
    allowed), nor eventlet's green socket (its ``recv`` waits for data rather
    than fail; it replaces ``socket.socket`` in a monkey-patched process,
    hence the test by name): those are read under a timeout set on the socket.
    """
    kind = type(sock)
    return kind.__module__ == "socket" and kind.__qualname__ == "socket"


class FrameReader:
    """Read one py-amqp connection's frames in bulk and hand them to py-amqp.

    Arguments:
        connection: An open py-amqp connection (kombu's ``connection.connection``).

    """

    def __init__(self, connection: amqp.Connection) -> None:
        self._connection = connection
        self._transport = connection.transport
        self._sock = connection.sock
        self._plain = reads_in_bulk(self._sock)
        # What py-amqp had read ahead already (nothing, usually) comes first.
        self._buffer: bytes = getattr(self._transport, "_read_buffer", b"")
        self._transport._read_buffer = b""
        self._pos = 0

    def waiting(self) -> bool:
        """Whether a frame can be handled without blocking (buffered, or bytes on the socket)."""
        if self._whole_frame():
            return True
        sock = self._sock
        # TLS: decrypted bytes wait in the TLS object, not on the socket
        # (duck-typed: eventlet's green TLS socket is not an ssl.SSLSocket).
        pending = getattr(sock, "pending", None)
        if pending is not None and pending():
            return True
        return bool(readable([sock], 0))

    def drain(self, timeout: float | None) -> None:
        """Hand over every whole frame buffered, reading first (up to ``timeout``) if none is.

        Raises:
            TimeoutError: No whole frame came within ``timeout`` seconds (0: none was there).
            OSError: The connection failed or was closed by the broker.
            amqp.exceptions.UnexpectedFrame: A frame does not end as AMQP says.

        """
        while not self._whole_frame():
            self._fill(timeout)
        handle = self._connection.on_inbound_frame
        while True:
            # The position is past the frame (or message) before py-amqp (and
            # the application's callback) sees it: an exception leaves the
            # rest buffered, for release() to hand back.
            if self._take_whole():
                continue
            frame = self._next_frame()
            if frame is None:
                return
            handle(frame)

    def _take_whole(self) -> bool:
        """A subclass's shortcut: handle what starts at the position itself (True), or leave it.

        Handling it moves the position past it; False leaves it to py-amqp's handler.
        """
        return False

    def release(self) -> None:
        """Give back what was read but not handed over: py-amqp reads on from there."""
        rest = self._buffer[self._pos :]
        self._transport._read_buffer = rest + self._transport._read_buffer
        self._buffer, self._pos = b"", 0

    def _whole_frame(self) -> bool:
        return frame_at(self._buffer, self._pos) is not None

    def _next_frame(self) -> tuple[int, int, bytes] | None:
        buffer = self._buffer
        frame = frame_at(buffer, self._pos)
        if frame is None:
            return None
        frame_type, channel, start, end = frame
        if buffer[end] != FRAME_END:
            raise amqp.exceptions.UnexpectedFrame(f"frame ends with {buffer[end]:#04x}, not 0xce")
        self._pos = end + 1
        return frame_type, channel, buffer[start:end]

    def _fill(self, timeout: float | None) -> None:
        sock = self._sock
        if self._plain and timeout is not None:
            # A poll (none when asked not to wait) and a recv: two system calls
            # where a timeout set and reset around the recv makes four.
            if timeout and not readable([sock], timeout):
                raise TimeoutError()
            try:
                data = sock.recv(READ_SIZE, socket.MSG_DONTWAIT)
            except BlockingIOError:
                raise TimeoutError() from None
        else:
            previous = sock.gettimeout()
            sock.settimeout(timeout)
            try:
                data = sock.recv(READ_SIZE)
            except ssl.SSLWantReadError:
                raise TimeoutError() from None
            finally:
                sock.settimeout(previous)
        if not data:
            self._transport.connected = False
            raise OSError("Server unexpectedly closed connection")
        self._buffer = self._buffer[self._pos :] + data
        self._pos = 0
