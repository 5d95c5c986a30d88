"""Logs never show a broker password, whoever wrote the message."""

from __future__ import annotations

import json
import logging
import socket
import struct
import sys

import pytest

from hypervisor_notifier import logs
from hypervisor_notifier.logs import FORMAT, MaskingFilter, MaskingFormatter

URL = "rabbit://user:s3cret@broker.example.org:5672/"


def record(msg: str, args: tuple = (), exc_info=None) -> logging.LogRecord:
    return logging.LogRecord("kombu.connection", logging.ERROR, __file__, 1, msg, args, exc_info)


def exc_info_of(exception: Exception):
    try:
        raise exception
    except Exception:
        return sys.exc_info()


@pytest.mark.parametrize(
    "log_record",
    [
        record(f"connecting to {URL}"),
        record("connecting to %s", (URL,)),
        record("connection failed", exc_info=exc_info_of(ConnectionError(f"refused: {URL}"))),
        record("failover to %r", ([URL, URL.replace("broker", "broker2")],)),
    ],
    ids=["message", "argument", "exception", "repr-of-a-list"],
)
def test_a_formatted_record_never_shows_the_password(log_record):
    line = MaskingFormatter(FORMAT).format(log_record)

    assert "s3cret" not in line
    assert "broker.example.org" in line  # still says where


def test_the_exception_is_still_logged():
    line = MaskingFormatter(FORMAT).format(
        record("failed", exc_info=exc_info_of(ConnectionError(f"refused: {URL}")))
    )

    assert "ConnectionError" in line
    assert "Traceback" in line


def test_the_filter_masks_the_message_and_exception_for_oslo_logs_json_formatter():
    from oslo_log.formatters import JSONFormatter

    log_record = record(
        "connecting to %s", (URL,), exc_info=exc_info_of(ConnectionError(f"refused: {URL}"))
    )
    assert MaskingFilter().filter(log_record)
    entry = json.loads(JSONFormatter().format(log_record))

    assert "s3cret" not in json.dumps(entry)
    assert "broker.example.org" in entry["message"]
    assert "ConnectionError: refused: rabbit://user:****@" in "".join(entry["traceback"])


def test_the_journal_sender_frames_fields_as_journald_reads_them(tmp_path, monkeypatch):
    path = str(tmp_path / "journal.socket")
    monkeypatch.setattr(logs, "JOURNAL_SOCKET", path)
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as journald:
        journald.bind(path)
        logs.JournalSender.send("two\nlines", PRIORITY=3, LOGGER_NAME="x")
        data = journald.recv(65536)

    assert data == b"MESSAGE\n" + struct.pack("<Q", 9) + b"two\nlines\nPRIORITY=3\nLOGGER_NAME=x\n"


def test_setup_with_log_dir_names_the_file_after_the_command(tmp_path):
    from hypervisor_notifier import conf as config

    conf = config.load(["--log-dir", str(tmp_path)], prog="hypervisor-events")
    try:
        logs.setup(conf, "hypervisor-events")
        logging.getLogger("hypervisor_notifier.test").warning("to %s", URL)
    finally:
        logging.getLogger().handlers.clear()

    written = (tmp_path / "hypervisor-events.log").read_text()
    assert "WARNING hypervisor_notifier.test [-] to rabbit://user:****@broker" in written
