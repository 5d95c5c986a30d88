"""Writing a batch of AMQP frames to the socket at once.

py-amqp writes each frame it is given (a publish is three: method, header,
body) as it comes. When the publisher sends a batch of events, one write for
the whole batch saves a system call and a TCP segment per message.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from amqp import method_framing


class BatchingWriter:
    """A transport's ``write`` that can gather frames and write them together.

    Arguments:
        transport: py-amqp's transport of the connection.

    """

    def __init__(self, transport: Any) -> None:
        self.transport = transport
        self._batch: bytearray | None = None

    def write(self, data: bytes | memoryview) -> None:
        """Write now, or add to the batch being gathered (copied: the caller reuses it)."""
        if self._batch is None:
            self.transport.write(data)
        else:
            self._batch += data

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Gather every frame written inside the block; write them at its end in one write."""
        self._batch = bytearray()
        try:
            yield
        finally:
            data, self._batch = self._batch, None
            if data:
                self.transport.write(data)


class FrameWriterFactory:
    """The ``frame_writer`` of an ``amqp.Connection``, keeping the connection's BatchingWriter.

    ``amqp.Connection(frame_writer=factory)`` calls it once connected, with the
    transport; :attr:`writer` is then the connection's writer.
    """

    def __init__(self) -> None:
        self.writer: BatchingWriter | None = None

    def __call__(self, connection: Any, transport: Any) -> Any:
        """Make py-amqp's frame writer, over a BatchingWriter of ``transport``."""
        self.writer = BatchingWriter(transport)
        return method_framing.frame_writer(connection, self.writer)
