"""A libvirtd of a test's own, in a private mount namespace: restart it, freeze it.

The daemon every other test shares must not be restarted or frozen. This one
runs with its own sockets in a test directory and tmpfs over libvirt's state
directories, so it clashes with nothing. It reports readiness through the
systemd notify protocol (NOTIFY_SOCKET), so starting it waits on a signal.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from pathlib import Path

CONFIG = """\
unix_sock_dir = "{directory}"
unix_sock_rw_perms = "0700"
auth_unix_rw = "none"
auth_unix_ro = "none"
"""
# tmpfs over the state directories the real daemon owns (pid and lock files).
SCRIPT = (
    "mount -t tmpfs tmpfs /run/libvirt && mount -t tmpfs tmpfs /var/lib/libvirt && "
    'exec libvirtd --config "$1/libvirtd.conf" --pid-file "$1/libvirtd.pid"'
)


class PrivateLibvirtd:
    """A libvirtd serving ``uri`` from ``directory``.

    Arguments:
        directory: Where its sockets, config and pid file go.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        (directory / "libvirtd.conf").write_text(CONFIG.format(directory=directory))
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def uri(self) -> str:
        """The test driver of this daemon."""
        return f"test+unix:///default?socket={self.directory}/libvirt-sock"

    def start(self, timeout: float = 30.0) -> None:
        """Start the daemon and wait for its READY notification."""
        notify_path = self.directory / "notify"
        notify_path.unlink(missing_ok=True)
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
            notify.bind(str(notify_path))
            notify.settimeout(timeout)
            self.process = subprocess.Popen(
                ["unshare", "--mount", "--propagation", "private",
                 "sh", "-c", SCRIPT, "sh", str(self.directory)],
                env={**os.environ, "NOTIFY_SOCKET": str(notify_path)},
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )  # fmt: skip
            while b"READY=1" not in notify.recv(4096):
                pass

    def stop(self) -> None:
        """Stop the daemon (SIGTERM) and wait for it; SIGKILL if it does not go."""
        process, self.process = self.process, None
        if process is None:
            return
        process.send_signal(signal.SIGCONT)  # a frozen daemon cannot handle SIGTERM
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def kill(self) -> None:
        """SIGKILL, as a crash or the OOM killer would: no goodbye to its clients."""
        process, self.process = self.process, None
        assert process is not None
        process.kill()  # unshare and sh exec: the process is libvirtd itself
        process.wait()

    def restart(self) -> None:
        """Stop and start: the test driver starts again from its default state."""
        self.stop()
        self.start()

    def freeze(self) -> None:
        """SIGSTOP: the daemon keeps its sockets but answers nothing."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        """SIGCONT."""
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)
