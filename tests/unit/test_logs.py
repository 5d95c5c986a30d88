"""Logs never show a broker password, whoever wrote the message."""

from __future__ import annotations

import logging
import sys

import pytest

from hypervisor_notifier.logs import FORMAT, MaskingFormatter

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
