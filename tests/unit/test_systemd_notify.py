"""sd_notify without a binding: where it sends, and when the watchdog is on."""

from __future__ import annotations

import os
import socket
import uuid

from hypervisor_notifier.notifier import systemd


def test_notify_sends_to_a_path_socket(tmp_path, monkeypatch):
    path = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        monkeypatch.setenv("NOTIFY_SOCKET", path)

        assert systemd.notify("READY=1")
        assert sock.recv(100) == b"READY=1"


def test_notify_sends_to_an_abstract_socket(monkeypatch):
    name = f"hn-test-{uuid.uuid4()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)

        assert systemd.notify("WATCHDOG=1")
        assert sock.recv(100) == b"WATCHDOG=1"


def test_notify_outside_systemd_does_nothing(monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)

    assert not systemd.notify("READY=1")


def test_notify_to_a_socket_gone_is_logged_not_raised(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "gone"))

    assert not systemd.notify("READY=1")
    assert "systemd notification READY=1" in caplog.text


def test_watchdog_interval_is_half_of_watchdog_usec_for_this_process(monkeypatch):
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    assert systemd.watchdog_interval() == 15.0

    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert systemd.watchdog_interval() == 15.0

    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))  # another process's
    assert systemd.watchdog_interval() is None

    monkeypatch.setenv("WATCHDOG_USEC", "0")
    monkeypatch.delenv("WATCHDOG_PID")
    assert systemd.watchdog_interval() is None
