"""Logging setup for the console scripts: one line per record, secrets masked."""

from __future__ import annotations

import logging
import sys

from hypervisor_notifier.transport_url import mask_secrets

FORMAT = "%(asctime)s %(levelname)s %(name)s [%(threadName)s] %(message)s"


class MaskingFormatter(logging.Formatter):
    """A formatter that masks ``user:password@`` in every formatted line.

    Code masks URLs itself; this catches what a library puts in an
    exception message.
    """

    def format(self, record: logging.LogRecord) -> str:
        """Format ``record``, then mask the secrets in the result."""
        return mask_secrets(super().format(record))


def setup(*, debug: bool = False, log_file: str | None = None) -> None:
    """Send logs to ``log_file`` (or standard error) at INFO, or DEBUG if ``debug``."""
    handler: logging.Handler = (
        logging.FileHandler(log_file) if log_file else logging.StreamHandler(sys.stderr)
    )
    handler.setFormatter(MaskingFormatter(FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if debug else logging.INFO)
    # kombu and amqp are chatty at DEBUG; their failures reach us as exceptions.
    for name in ("amqp", "kombu"):
        logging.getLogger(name).setLevel(logging.WARNING)
