"""``hypervisor-notifier`` as a child process, for the functional and end-to-end tests.

Needs no test framework: the pytest suites and the unittest-based nova and
end-to-end suites share it.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path

TIMEOUT = 30.0
#: Runs the service after a prelude (``python -c``), with the remaining arguments.
RUN_SERVICE = (
    "\nimport sys\nfrom hypervisor_notifier.cmd.notifier import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)


def write_config(path: Path, sections: dict[str, dict[str, str]]) -> None:
    """Write an oslo.config file of ``sections`` (name -> option -> value)."""
    path.write_text(
        "".join(
            f"[{section}]\n" + "".join(f"{k} = {v}\n" for k, v in values.items())
            for section, values in sections.items()
        )
    )


def http_get(port: int, path: str) -> tuple[int, str]:
    """GET ``path`` from a local health endpoint: (status, body)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def healthz(port: int) -> tuple[int, dict]:
    """``/healthz`` of a local health endpoint: (status, its JSON body)."""
    status, body = http_get(port, "/healthz")
    return status, json.loads(body)


class ServiceProcess:
    """``hypervisor-notifier`` running as a child process, its log lines collected."""

    def __init__(
        self,
        config_path: Path,
        *,
        prelude: str = "",
        env: Mapping[str, str] | None = None,
    ) -> None:
        """Start the service on ``config_path``.

        Arguments:
            config_path: Its config file.
            prelude: Python run first in the child (e.g. to block an import).
            env: Extra environment variables.

        """
        command = [sys.executable, "-m", "hypervisor_notifier.cmd.notifier"]
        if prelude:
            command = [sys.executable, "-c", prelude + RUN_SERVICE]
        self.process = subprocess.Popen(
            [*command, "--config-file", str(config_path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **(env or {})},
        )
        self.lines: list[str] = []
        self._new_lines: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line)
            self._new_lines.put(line)
        self._new_lines.put(None)

    def wait_for_log(self, text: str, count: int = 1, timeout: float = TIMEOUT) -> list[str]:
        """Wait until ``count`` log lines contain ``text``; return them."""
        deadline = time.monotonic() + timeout
        while True:
            found = [line for line in self.lines if text in line]
            if len(found) >= count:
                return found
            remaining = deadline - time.monotonic()
            try:
                line = self._new_lines.get(timeout=max(remaining, 0.001))
            except queue.Empty:
                line = ""
            if line is None or remaining <= 0:
                raise AssertionError(f"{count} log lines with {text!r} expected; log:\n{self.log}")

    @property
    def log(self) -> str:
        return "".join(self.lines)

    @property
    def health_port(self) -> int:
        """The port of the health endpoint, as the service logged it."""
        line = self.wait_for_log("health and metrics on http://")[0]
        return int(line.split("http://", 1)[1].split("/", 1)[0].rsplit(":", 1)[1])

    def healthz(self) -> tuple[int, dict]:
        """``/healthz``: (status, its JSON body)."""
        return healthz(self.health_port)

    def stop(self) -> int:
        """SIGTERM, then the exit status."""
        if self.process.poll() is None:
            self.process.terminate()
        try:
            return self.process.wait(TIMEOUT)
        finally:
            self._reader.join(5)
