"""The watchdog pings only while the publisher and backend threads run and no call hangs."""

from __future__ import annotations

import threading
import types

import pytest

from hypervisor_notifier.notifier import watchdog as watchdog_module
from hypervisor_notifier.notifier.watchdog import Watchdog


class FakeService:
    def __init__(self) -> None:
        self.publisher = types.SimpleNamespace(alive=True)
        self.backend = types.SimpleNamespace(name="libvirt", alive=lambda: self.backend_alive)
        self.backend_alive = True
        self.listener = self
        self.release = threading.Event()
        self.entered = threading.Event()

    def on_resync(self, reason: str) -> str:
        self.entered.set()
        self.release.wait()
        return reason


@pytest.fixture
def service():
    return FakeService()


def test_alive_when_the_threads_run_and_no_call_hangs(service):
    assert Watchdog(service, interval=30).problem() is None


def test_a_dead_publisher_thread(service):
    service.publisher.alive = False

    assert "publisher thread" in Watchdog(service, interval=30).problem()


def test_a_dead_backend_thread(service):
    service.backend_alive = False

    assert "libvirt backend's thread" in Watchdog(service, interval=30).problem()


def test_a_listener_call_running_longer_than_the_watchdog_period(service):
    watchdog = Watchdog(service, interval=0.0)  # any call is "too long"
    caller = threading.Thread(target=service.listener.on_resync, args=("periodic",))
    caller.start()
    service.entered.wait()
    try:
        assert "stuck in on_resync" in watchdog.problem()
    finally:
        service.release.set()
        caller.join()
    assert watchdog.problem() is None  # the call returned


def test_run_pings_while_alive_and_logs_instead_while_not(service, monkeypatch, caplog):
    sent: list[str] = []
    monkeypatch.setattr(watchdog_module.systemd, "notify", sent.append)
    watchdog = Watchdog(service, interval=0.0)
    answers = iter([False, False, True])  # two rounds, then stop

    watchdog.run(lambda _timeout: next(answers))
    assert sent == ["WATCHDOG=1", "WATCHDOG=1"]

    service.publisher.alive = False
    answers = iter([False, True])
    watchdog.run(lambda _timeout: next(answers))
    assert sent == ["WATCHDOG=1", "WATCHDOG=1"]
    assert "systemd watchdog not pinged" in caplog.text
