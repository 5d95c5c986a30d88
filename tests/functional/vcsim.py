"""VMware's vSphere API simulator (govmomi's, from Debian), one per test, on a loopback port.

``tools/vcsim.sh build`` builds the project's small main once per machine
(cached); each simulator serves HTTPS with a certificate it writes for the
test, on a free port, and forgets every change when restarted.
"""

from __future__ import annotations

import http.client
import ssl
import subprocess
import urllib.parse
from pathlib import Path
from typing import Any

from pyVim import connect
from pyVmomi import vim

REPO = Path(__file__).resolve().parents[2]


def build() -> str:
    """The simulator binary (built now if this machine has none)."""
    result = subprocess.run(
        ["bash", str(REPO / "tools" / "vcsim.sh"), "build"],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    return result.stdout.strip()


class Simulator:
    """A simulated ESXi host with ``vms`` VMs, all powered on at start.

    Arguments:
        binary: The simulator binary.
        directory: Where its certificate and log go.
        vms: How many VMs (per host and per cluster for a vCenter).
        vcenter: Simulate a vCenter instead: datacenter DC0 with the standalone
            host DC0_H0 (VMs DC0_H0_VM<n>) and the cluster DC0_C0 (VMs
            DC0_C0_RP0_VM<n>).
    """

    def __init__(self, binary: str, directory: Path, vms: int = 4, vcenter: bool = False) -> None:
        self.binary = binary
        self.directory = directory
        self.vms = vms
        self.model = [] if vcenter else ["-esx"]
        self.ca_file = str(directory / "vcsim-cert.pem")
        self.port = 0
        self.username = self.password = ""
        self.process: subprocess.Popen[str] | None = None

    def start(self) -> None:
        """Start on ``self.port`` (a free port the first time) and read its URL line."""
        log = (self.directory / "vcsim.log").open("a")
        self.process = subprocess.Popen(
            [self.binary, *self.model, "-vms", str(self.vms), "-listen", f"127.0.0.1:{self.port}",
             "-cert-out", self.ca_file],
            stdout=subprocess.PIPE, stderr=log, text=True,
        )  # fmt: skip
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line.startswith("URL="):
            raise AssertionError(f"vcsim did not start (exit {self.process.wait()})")
        url = urllib.parse.urlsplit(line.split()[0].removeprefix("URL="))
        self.port = url.port or 443
        self.username = urllib.parse.unquote(url.username or "")
        self.password = urllib.parse.unquote(url.password or "")

    def stop(self) -> None:
        """SIGTERM and wait."""
        process, self.process = self.process, None
        if process is not None:
            process.terminate()
            process.wait(10)
            if process.stdout is not None:
                process.stdout.close()

    def restart(self) -> None:
        """Stop, and start again on the same port: every VM is powered on again."""
        self.stop()
        self.start()

    def config(self, **overrides: str) -> dict[str, str]:
        """The service's ``[esx]`` section for this simulator, certificate verified."""
        return {
            "host": "127.0.0.1",
            "port": str(self.port),
            "username": self.username,
            "password": self.password,
            "ca_file": self.ca_file,
            "reconnect_interval_max": "1",
            **overrides,
        }

    def session(self) -> Any:
        """A pyVmomi session of the test's own, acting as another client would."""
        return connect.SmartConnect(
            host="127.0.0.1", port=self.port, user=self.username, pwd=self.password,
            sslContext=ssl.create_default_context(cafile=self.ca_file),
        )  # fmt: skip

    @staticmethod
    def vms_by_name(session: Any) -> dict[str, Any]:
        content = session.RetrieveContent()
        view = content.viewManager.CreateContainerView(
            content.rootFolder, [vim.VirtualMachine], True
        )
        try:
            return {vm.name: vm for vm in view.view}
        finally:
            view.Destroy()

    def ask(
        self, vm_name: str, question_id: str, message_id: str, text: str, argument: str = ""
    ) -> None:
        """Give a VM a pending question, as ESX does on a full datastore (guest.go)."""
        form = {"name": vm_name, "id": question_id, "message": message_id, "text": text}
        self._guest("POST", "/hn/question", urllib.parse.urlencode({**form, "argument": argument}))

    def answer(self, vm_name: str) -> None:
        """Clear a VM's pending question, as an answer would."""
        self._guest("DELETE", "/hn/question", urllib.parse.urlencode({"name": vm_name}))

    def tools(self, vm_name: str, status: str) -> None:
        """Set a VM's guest.toolsRunningStatus, as its VMware Tools starting or stopping would."""
        self._guest(
            "POST", "/hn/tools", urllib.parse.urlencode({"name": vm_name, "status": status})
        )

    def _guest(self, method: str, path: str, form: str) -> None:
        """Call one of tools/vcsim/guest.go's endpoints (204 expected)."""
        context = ssl.create_default_context(cafile=self.ca_file)
        connection = http.client.HTTPSConnection("127.0.0.1", self.port, context=context)
        try:
            body, path = (form, path) if method == "POST" else (None, f"{path}?{form}")
            headers = {"Content-Type": "application/x-www-form-urlencoded"}
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
            assert response.status == 204, (response.status, response.read())
        finally:
            connection.close()
