"""masakari's real API (from PyPI), run by the tests: sqlite, no keystone, no engine.

``auth_strategy = noauth2`` (every request is an admin's), oslo.messaging's
in-process ``fake:`` transport for the casts to the engine, which does not
run: the tests check what the API accepted, and hand the payload to the
engine's own ``instance_events`` code. A host is registered in a failover
segment through masakari's own database API: the REST call would ask nova
whether the host is a compute service.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import requests

BIN = Path(sys.executable).parent
START_TIMEOUT = 60.0
ADMIN = {"X-Auth-Token": "admin:admin"}

_REGISTER_HOST = """
import sys, uuid
from masakari import config, context, db, objects
config.parse_args(["masakari", "--config-file", sys.argv[1]])
objects.register_all()
ctx = context.get_admin_context()
segment = db.failover_segment_create(ctx, {"uuid": str(uuid.uuid4()), "name": sys.argv[3],
    "service_type": "COMPUTE", "recovery_method": "auto", "enabled": True})
db.host_create(ctx, {"uuid": str(uuid.uuid4()), "name": sys.argv[2], "type": "COMPUTE",
    "control_attributes": "SSH", "reserved": False, "on_maintenance": False,
    "failover_segment_id": segment.uuid})
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class MasakariAPI:
    """One masakari-api process with its own database and port.

    Arguments:
        directory: Its config, database and log.

    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.conf = directory / "masakari.conf"
        self.process: subprocess.Popen[bytes] | None = None
        paste = next(Path(sys.prefix).glob("etc/masakari/api-paste.ini"))
        self.conf.write_text(
            "[DEFAULT]\nauth_strategy = noauth2\ntransport_url = fake:/\n"
            f"masakari_api_listen = 127.0.0.1\nmasakari_api_listen_port = {self.port}\n"
            "masakari_api_workers = 1\n\n"
            f"[wsgi]\napi_paste_config = {paste}\n\n"
            f"[database]\nconnection = sqlite:///{directory}/masakari.db\n\n"
            f"[taskflow]\nconnection = sqlite:///{directory}/taskflow.db\n"
        )
        self._masakari("masakari-manage", "db", "sync")

    @property
    def url(self) -> str:
        """The v1 endpoint (what keystone's catalog would give)."""
        return f"http://127.0.0.1:{self.port}/v1"

    def _masakari(self, command: str, *args: str) -> None:
        subprocess.run([str(BIN / command), "--config-file", str(self.conf), *args],
                       check=True, capture_output=True, timeout=START_TIMEOUT)  # fmt: skip

    def register_host(self, host: str) -> None:
        """Put ``host`` in a failover segment of its own, as an operator would."""
        subprocess.run([sys.executable, "-c", _REGISTER_HOST, str(self.conf), host,
                        f"segment-{uuid.uuid4().hex[:8]}"],
                       check=True, capture_output=True, timeout=START_TIMEOUT)  # fmt: skip

    def start(self) -> None:
        """Start the API; return once it answers."""
        log = (self.directory / "api.log").open("ab")
        self.process = subprocess.Popen(
            [str(BIN / "masakari-api"), "--config-file", str(self.conf)],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                if requests.get(f"{self.url}/segments", headers=ADMIN, timeout=2).ok:
                    return
            except requests.ConnectionError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"masakari-api did not start: see {self.directory}/api.log")
            time.sleep(0.2)  # nothing to wait on but the port

    def stop(self) -> None:
        """Stop the API (and its worker) and wait for it."""
        if self.process is None:
            return
        # The launcher forks a worker: the whole session goes.
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self.process = None

    def notifications(self, host: str) -> list[dict]:
        """The notifications masakari accepted from ``host``'s guests, oldest first."""
        answer = requests.get(f"{self.url}/notifications", headers=ADMIN, timeout=10)
        answer.raise_for_status()
        host_uuids = {h["uuid"] for h in self._hosts() if h["name"] == host}
        found = [n for n in answer.json()["notifications"] if n["source_host_uuid"] in host_uuids]
        return sorted(found, key=lambda n: n["id"])

    def _hosts(self) -> list[dict]:
        segments = requests.get(f"{self.url}/segments", headers=ADMIN, timeout=10).json()
        hosts = []
        for segment in segments["segments"]:
            url = f"{self.url}/segments/{segment['uuid']}/hosts"
            hosts += requests.get(url, headers=ADMIN, timeout=10).json()["hosts"]
        return hosts
