"""A RabbitMQ node of the tests' own: plain TCP (for faults) or TLS only (with its certificates).

The shared node on 127.0.0.1:5672 is never touched: this one has its own
node name, ports, database, logs, Erlang cookie (its own HOME) and config
file. It registers with the machine's epmd, as any second node does.
Policies, deleted queues, ``stop_app``, alarms: do them here, never on the
shared node (others' tests run against it at the same time).

Usage (the ``private_broker`` and ``tls_broker`` fixtures of conftest.py do
this once per session; a module that stops or alarms its node overrides
``private_broker`` to have one of its own)::

    node = PrivateRabbit(directory, tls=False)   # plain TCP; tls=True (default): TLS only
    node.start()
    node.url                                  # rabbit://guest:guest@127.0.0.1:<port>/
    node.ctl("set_policy", ...)               # rabbitmqctl against this node
    node.reject_publish(policy, pattern, 5)   # a limit that never drops what a queue holds
    with node.channel() as channel: ...       # an amqp channel (plain TCP)
    node.stop()

Certificates of the TLS mode (made with the ``openssl`` command):

- ``ca.pem``: the test CA; it signed ``server.pem`` (for ``localhost`` only,
  so connecting to 127.0.0.1 fails the name check) and ``client.pem``.
- ``other-ca.pem``: a CA that signed nothing here (the "wrong CA").

The node requires a client certificate signed by the test CA.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import amqp

RABBITMQ_BIN = Path("/usr/lib/rabbitmq/bin")
START_TIMEOUT = 90


def free_port() -> int:
    """A TCP port nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _openssl(*args: str | Path, cwd: Path) -> None:
    subprocess.run(["openssl", *map(str, args)], cwd=cwd, check=True, capture_output=True)


def make_certificates(directory: Path) -> None:
    """Write the CAs, the server's and the client's certificates and keys into ``directory``."""
    for ca in ("ca", "other-ca"):
        _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                 "-keyout", f"{ca}.key", "-out", f"{ca}.pem", "-subj", f"/CN=hn-test-{ca}",
                 cwd=directory)  # fmt: skip
    for name, extension in (
        ("server", "subjectAltName=DNS:localhost\nextendedKeyUsage=serverAuth\n"),
        ("client", "extendedKeyUsage=clientAuth\n"),
    ):
        (directory / f"{name}.ext").write_text(extension)
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key",
                 "-out", f"{name}.csr", "-subj", f"/CN=hn-test-{name}", cwd=directory)  # fmt: skip
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                 "-CAcreateserial", "-days", "2", "-out", f"{name}.pem",
                 "-extfile", f"{name}.ext", cwd=directory)  # fmt: skip


class PrivateRabbit:
    """A private RabbitMQ node listening on 127.0.0.1:``port``, plain TCP or TLS only.

    Arguments:
        directory: Where its config, database, logs (and certificates) go.
        tls: Listen for TLS only, requiring a client certificate; else plain TCP only.

    """

    #: More lines of ``rabbitmq.conf`` (a subclass's).
    extra_config = ""

    def __init__(self, directory: Path, *, tls: bool = True) -> None:
        self.directory = directory
        self.tls = tls
        self.node = f"hn-{'tls' if tls else 'tcp'}-{uuid.uuid4().hex[:8]}@localhost"
        self.port = free_port()
        self.pid_file = directory / "rabbit.pid"
        self.process: subprocess.Popen[bytes] | None = None

    def path(self, name: str) -> str:
        """A file of the node's directory (e.g. ``ca.pem``)."""
        return str(self.directory / name)

    @property
    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "HOME": str(self.directory),  # its own Erlang cookie
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_CONFIG_FILE": self.path("rabbitmq.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": self.path("enabled_plugins"),
            "RABBITMQ_MNESIA_BASE": self.path("mnesia"),
            "RABBITMQ_LOG_BASE": self.path("log"),
            "RABBITMQ_PID_FILE": str(self.pid_file),
            "RABBITMQ_DIST_PORT": str(free_port()),
        }

    @property
    def url(self) -> str:
        """A transport URL of the node's ``guest`` user (from 127.0.0.1: allowed)."""
        return f"{'rabbits' if self.tls else 'rabbit'}://guest:guest@127.0.0.1:{self.port}/"

    @contextlib.contextmanager
    def channel(self) -> Iterator[amqp.Channel]:
        """An AMQP channel as ``guest`` (plain TCP mode), closed after."""
        connection = amqp.Connection(f"127.0.0.1:{self.port}", userid="guest", password="guest")
        connection.connect()
        try:
            yield connection.channel()
        finally:
            connection.close()

    def _listeners(self) -> str:
        if not self.tls:
            return f"listeners.tcp.default = 127.0.0.1:{self.port}\n"
        make_certificates(self.directory)
        return (
            "listeners.tcp = none\n"
            f"listeners.ssl.default = 127.0.0.1:{self.port}\n"
            f"ssl_options.cacertfile = {self.path('ca.pem')}\n"
            f"ssl_options.certfile = {self.path('server.pem')}\n"
            f"ssl_options.keyfile = {self.path('server.key')}\n"
            "ssl_options.verify = verify_peer\n"
            "ssl_options.fail_if_no_peer_cert = true\n"
        )

    def start(self) -> None:
        """Write the config (and certificates) and start the node; return once it is booted."""
        (self.directory / "enabled_plugins").write_text("[].\n")
        (self.directory / "rabbitmq.conf").write_text(self._listeners() + self.extra_config)
        log = (self.directory / "server.log").open("ab")
        self.process = subprocess.Popen(
            [str(RABBITMQ_BIN / "rabbitmq-server")], env=self.env, stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        # Returns once the node wrote its pid file and its applications run
        # (or fails at once if the node's process exits).
        self.ctl("wait", str(self.pid_file), "--timeout", str(START_TIMEOUT))

    def ctl(self, *args: str) -> str:
        """Run rabbitmqctl against this node; its output."""
        result = subprocess.run(
            [str(RABBITMQ_BIN / "rabbitmqctl"), "-q", "-n", self.node, *args],
            env=self.env, capture_output=True, text=True, timeout=START_TIMEOUT,
        )  # fmt: skip
        if result.returncode:
            raise RuntimeError(f"rabbitmqctl {' '.join(args)}: {result.stdout}{result.stderr}")
        return result.stdout

    def reject_publish(self, policy: str, pattern: str, limit: int) -> None:
        """Policy ``policy``: queues matching ``pattern`` nack publishes beyond ``limit`` messages.

        Set in two steps, as doc/source/operations.rst tells operators: RabbitMQ
        (3.10) applies a policy's ``max-length`` before its ``overflow``, so a
        queue not yet told ``reject-publish`` that holds more than ``limit``
        drops its oldest messages at once (``drop-head``, the default): messages
        it had confirmed to their publisher. With the overflow set first, the
        limit only refuses new ones.
        """
        for definition in (
            '{"overflow": "reject-publish"}',
            f'{{"max-length": {limit}, "overflow": "reject-publish"}}',
        ):
            self.ctl("set_policy", "--apply-to", "queues", policy, pattern, definition)

    def kill9(self) -> None:
        """SIGKILL the node's Erlang VM: no clean shutdown, no flush."""
        assert self.process is not None
        os.kill(int(self.pid_file.read_text().strip()), signal.SIGKILL)
        self.process.wait(START_TIMEOUT)

    def _vm_pid(self) -> int | None:
        """The Erlang VM's pid (its pid file's), while it is still our script's child."""
        try:
            pid = int(self.pid_file.read_text().strip())
            stat = Path(f"/proc/{pid}/stat").read_text()
        except (OSError, ValueError):
            return None
        parent = int(stat.rsplit(")", 1)[1].split()[1])  # "pid (comm) state ppid ..."
        return pid if self.process is not None and parent == self.process.pid else None

    def stop(self) -> None:
        """Stop the node and wait for its process; SIGKILL its Erlang VM if it does not stop."""
        if self.process is None:
            return
        try:
            self.ctl("stop")
            self.process.wait(START_TIMEOUT)
        except (RuntimeError, subprocess.TimeoutExpired):
            # The VM is the rabbitmq-server script's child: killing the script
            # alone would leave the node running. Killed first, it is reaped by
            # the script, which then exits (a pid since reused is spared).
            vm = self._vm_pid()
            if vm is not None:
                os.kill(vm, signal.SIGKILL)
            try:
                self.process.wait(START_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
