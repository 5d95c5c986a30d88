"""Logging of every command through oslo.log, with secrets masked by a filter.

oslo.log brings what deployment tools render: ``log_dir``, ``log_file``,
``use_journal``, ``use_json``, ``use_syslog``, ``log_config_append``,
``default_log_levels``, ``debug`` (its options are registered with the
service's, see :mod:`hypervisor_notifier.conf.opts`). Two choices are ours:

- With no destination configured, logs go to standard error, never mixed
  with a command's output (oslo.log's own fallback is standard output).
- ``use_journal`` needs no Python binding of systemd: when python-systemd is
  not installed, :class:`JournalSender` speaks the journal's native protocol
  (one datagram of ``FIELD=value`` lines), so each record keeps its priority
  (an ERROR is ``err``, not ``info``).
"""

from __future__ import annotations

import importlib.metadata
import logging
import socket
import struct
import sys
from typing import Any

from oslo_config import cfg
from oslo_log import handlers as oslo_handlers
from oslo_log import log

from hypervisor_notifier.transport_url import mask_secrets

PROJECT = "hypervisor-notifier"
#: The format of :class:`MaskingFormatter` (and of oslo.log's default line).
FORMAT = "%(asctime)s %(levelname)s %(name)s [%(threadName)s] %(message)s"
#: Where systemd-journald listens for native messages.
JOURNAL_SOCKET = "/run/systemd/journal/socket"


class MaskingFilter(logging.Filter):
    """Mask ``user:password@`` in a record's message and exception, whatever the formatter.

    Code masks URLs itself; this catches what a library puts in a message or
    an exception. Attached to every handler, so JSON, journal and syslog
    records are masked as well as text lines.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite ``record`` masked; never drop it."""
        message = record.getMessage()
        masked = mask_secrets(message)
        if masked != message or record.args:
            record.msg, record.args = masked, ()
        if record.exc_info and record.exc_info[1] is not None:
            exc_type, exc, tb = record.exc_info
            text = str(exc)
            if mask_secrets(text) != text:
                record.exc_info = (exc_type, _masked_copy(exc, mask_secrets(text)), tb)
                record.exc_text = None
        return True


def _masked_copy(exc: BaseException, text: str) -> BaseException:
    """An exception of the same type name whose text is ``text`` (its chain dropped: unmasked)."""
    masked_type = type(type(exc).__name__, (Exception,), {"__str__": lambda _self: text})
    masked_type.__module__ = type(exc).__module__
    masked_type.__qualname__ = type(exc).__qualname__
    return masked_type(text)


class MaskingFormatter(logging.Formatter):
    """A formatter whose lines are masked, for handlers set up without oslo.log."""

    def format(self, record: logging.LogRecord) -> str:
        """Format ``record`` masked by :class:`MaskingFilter`, then mask the line too."""
        MaskingFilter().filter(record)
        return mask_secrets(super().format(record))


class JournalSender:
    """python-systemd's ``journal.send``, in the journal's native protocol.

    oslo.log's journal handler calls ``send(message, **fields)``; installed in
    its place when python-systemd is missing (see :func:`setup`).
    """

    @staticmethod
    def send(message: str, **fields: Any) -> None:
        """Send one entry: ``MESSAGE`` and ``fields`` (upper-case names, str or int values)."""
        payload = b"".join(
            _field(name, value) for name, value in {"MESSAGE": message, **fields}.items()
        )
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.sendto(payload, JOURNAL_SOCKET)


def _field(name: str, value: object) -> bytes:
    data = str(value).encode("utf-8", "replace")
    if b"\n" in data:  # length-prefixed: a value may hold newlines (a traceback)
        return name.encode() + b"\n" + struct.pack("<Q", len(data)) + data + b"\n"
    return name.encode() + b"=" + data + b"\n"


def setup(conf: cfg.ConfigOpts, prog: str) -> None:
    """Set up logging from ``conf`` (oslo.log's options) for the command ``prog``.

    Arguments:
        conf: The loaded configuration; oslo.log's options are registered on it.
        prog: The command's name: ``log_dir`` without ``log_file`` writes ``<prog>.log``.

    Raises:
        ValueError: A destination cannot be used; the text names the option and why.

    """
    if conf.log_dir and not conf.log_file:
        # oslo.log would name the file after sys.argv[0] ("<frozen runpy>" under -m).
        conf.set_default("log_file", f"{prog}.log")
    if not (conf.log_file or conf.log_dir or conf.use_journal):
        conf.set_default("use_stderr", True)
    if conf.use_journal and oslo_handlers.journal is None:
        oslo_handlers.journal = JournalSender
    try:
        log.setup(conf, PROJECT, version=_version())
    except (OSError, RuntimeError, log.LogConfigError) as exc:
        raise ValueError(_describe_setup_error(conf, exc)) from None
    for handler in logging.getLogger().handlers:
        handler.addFilter(MaskingFilter())


def _describe_setup_error(conf: cfg.ConfigOpts, exc: Exception) -> str:
    """Which option made oslo.log fail, and why, in one line."""
    if conf.log_config_append:
        option = f"log_config_append {conf.log_config_append}"
        reason = str(getattr(exc, "err_msg", exc))
    elif conf.log_file:
        path = f"{conf.log_dir}/{conf.log_file}" if conf.log_dir else conf.log_file
        option, reason = f"log_dir/log_file {path}", getattr(exc, "strerror", None) or str(exc)
    else:
        option, reason = "use_journal/use_syslog", str(exc)
    return f"[DEFAULT] {option}: {reason}"


def _version() -> str:
    try:
        return importlib.metadata.version(PROJECT)
    except importlib.metadata.PackageNotFoundError:  # run from a source tree
        return "unknown"


def setup_stderr(*, debug: bool) -> None:
    """Log to standard error at INFO (DEBUG if ``debug``), before any configuration is read."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(MaskingFormatter(FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if debug else logging.INFO)
