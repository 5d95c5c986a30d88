"""Type=notify and WatchdogSec: the real service tells a stand-in of systemd it is ready and alive.

The stand-in is what systemd gives a service: a unix datagram socket named by
``$NOTIFY_SOCKET`` (a path, or ``@name`` in the abstract namespace) and
``$WATCHDOG_USEC``. A hung dispatch thread stops the pings, so systemd
would restart the service.
"""

from __future__ import annotations

import contextlib
import os
import queue
import socket
import threading
import time
import uuid

import pytest

from tests.service_process import TIMEOUT

WATCHDOG_USEC = 2_000_000

#: Hangs the dispatch thread in the first resync after the file named by
#: $HN_TEST_HANG_FILE appears (a stuck hypervisor call, a deadlock...).
HANG_WHEN_ASKED = """
import os, threading
from hypervisor_notifier.notifier.service import Service
_resync = Service.on_resync
def on_resync(self, reason):
    if os.path.exists(os.environ["HN_TEST_HANG_FILE"]):
        threading.Event().wait()
    return _resync(self, reason)
Service.on_resync = on_resync
"""


class Systemd:
    """The notification socket; every datagram received, with its arrival time."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address.replace("@", "\0", 1) if address.startswith("@") else address)
        self.received: queue.SimpleQueue[tuple[float, str]] = queue.SimpleQueue()
        self.seen: list[tuple[float, str]] = []
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        with contextlib.suppress(OSError):
            while data := self.sock.recv(4096):
                self.received.put((time.monotonic(), data.decode()))

    def wait_for(self, state: str) -> float:
        """Wait for the datagram ``state``; return when it arrived."""
        deadline = time.monotonic() + TIMEOUT
        while True:
            arrived, data = self.received.get(timeout=max(deadline - time.monotonic(), 0.001))
            self.seen.append((arrived, data))
            if data == state:
                return arrived

    def pending(self) -> list[str]:
        """The datagrams received and not yet waited for."""
        found = []
        with contextlib.suppress(queue.Empty):
            while True:
                found.append(self.received.get_nowait()[1])
        return found

    def close(self) -> None:
        self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()


@pytest.fixture(params=["path", "abstract"])
def systemd(request, tmp_path):
    address = str(tmp_path / "notify") if request.param == "path" else f"@hn-{uuid.uuid4()}"
    stand_in = Systemd(address)
    yield stand_in
    stand_in.close()


def test_ready_then_watchdog_pings_within_watchdog_usec_then_stopping(systemd, start_service):
    service = start_service(
        env={"NOTIFY_SOCKET": systemd.address, "WATCHDOG_USEC": str(WATCHDOG_USEC)}
    )

    ready = systemd.wait_for("READY=1")
    pings = [systemd.wait_for("WATCHDOG=1") for _ in range(4)]
    service.wait_for_log("connected to libvirt")

    gaps = [later - earlier for earlier, later in zip([ready, *pings], pings, strict=False)]
    print(f"watchdog pings every {[round(g, 2) for g in gaps]} s; WATCHDOG_USEC 2 s")
    # What systemd checks: a ping at least every WATCHDOG_USEC.
    assert max(gaps) < WATCHDOG_USEC / 1e6
    assert service.stop() == 0
    systemd.wait_for("STOPPING=1")


def test_a_hung_dispatch_thread_stops_the_pings(systemd, start_service, tmp_path):
    hang_file = tmp_path / "hang"
    service = start_service(
        env={
            "NOTIFY_SOCKET": systemd.address,
            "WATCHDOG_USEC": str(WATCHDOG_USEC),
            "HN_TEST_HANG_FILE": str(hang_file),
        },
        prelude=HANG_WHEN_ASKED,
        sync={"interval": "1"},
    )
    systemd.wait_for("READY=1")
    systemd.wait_for("WATCHDOG=1")

    hang_file.touch()  # the next periodic resync hangs
    service.wait_for_log("systemd watchdog not pinged")
    systemd.pending()  # pings sent before the hang was noticed
    service.wait_for_log("systemd watchdog not pinged", count=3)

    assert "WATCHDOG=1" not in systemd.pending()
    assert "stuck in on_resync" in service.log


def test_without_notify_socket_the_service_runs_as_before(start_service):
    assert "NOTIFY_SOCKET" not in os.environ
    service = start_service()

    service.wait_for_log("connected to broker")
    assert "systemd watchdog" not in service.log
