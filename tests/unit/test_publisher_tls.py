"""The publisher: TLS options, and when its pump must not wait.

It must not wait on the socket for frames OpenSSL decrypted already, nor at
all when a stop is requested and nothing is left to confirm.
"""

from __future__ import annotations

import select
import socket
import ssl
import time

import pytest

from hypervisor_notifier.conf import ConfigError
from hypervisor_notifier.notifier.outbox import MemoryOutbox
from hypervisor_notifier.notifier.publisher import Publisher
from hypervisor_notifier.tls import BrokerAccess, TLSSettings
from hypervisor_notifier.transport_url import TransportURL
from hypervisor_notifier.wire import Topology


class DecryptedAhead:
    """A TLS socket stand-in: a real, silent socket, plus frames OpenSSL holds already."""

    def __init__(self, silent: socket.socket) -> None:
        self.silent = silent
        self.buffered = 21  # one basic.ack frame

    def fileno(self) -> int:
        return self.silent.fileno()

    def pending(self) -> int:
        return self.buffered


class Connection:
    """What the pump uses of an amqp.Connection."""

    def __init__(self, sock: DecryptedAhead) -> None:
        self.sock = sock
        self.frames_read = 0

    def drain_events(self, timeout: float) -> None:
        if not self.sock.buffered:
            raise TimeoutError
        self.sock.buffered = 0
        self.frames_read += 1

    def heartbeat_tick(self) -> None:
        pass


def test_the_pump_reads_frames_openssl_decrypted_before_waiting_on_the_socket():
    publisher = Publisher(MemoryOutbox(), access=BrokerAccess(TransportURL.parse("rabbits://h/")),
                          host="h", topology=Topology("x", "t"), heartbeat=0)  # fmt: skip
    left, right = socket.socketpair()
    with left, right:
        connection = Connection(DecryptedAhead(left))
        publisher._connection, publisher._channel = connection, object()
        publisher._blocked = True  # nothing to publish: only the socket matters
        began = time.monotonic()
        publisher._pump()
    # Without the pending() check, select would wait its 5 s on the silent socket.
    assert connection.frames_read == 1
    assert time.monotonic() - began < 1.0


def test_tls_options_ask_for_verification_and_the_name_of_the_broker(tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    options = TLSSettings(str(ca)).amqp_ssl("broker.example.org")
    assert options == {"server_hostname": "broker.example.org", "cert_reqs": ssl.CERT_REQUIRED,
                       "ca_certs": str(ca)}  # fmt: skip


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"ssl_ca_file": "/nonexistent/ca.pem"},
            "ssl_ca_file '/nonexistent/ca.pem': no such file",
        ),
        ({"ssl_key_file": "/etc/hostname"}, "ssl_key_file is set but ssl_cert_file is not"),
    ],
)
def test_unusable_tls_options_are_a_config_error_naming_the_option(options, message):
    from oslo_config import cfg

    from hypervisor_notifier.conf import register_opts

    conf = cfg.ConfigOpts()
    register_opts(conf)
    conf([], default_config_files=[])
    for name, value in options.items():
        conf.set_override(name, value, "publisher")
    with pytest.raises(ConfigError, match=f"\\[publisher\\] {message}"):
        Publisher.from_conf(conf, MemoryOutbox())


def test_the_tls_options_work_in_another_projects_group(tmp_path):
    from oslo_config import cfg

    from hypervisor_notifier.conf import tls as tls_conf

    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    conf = cfg.ConfigOpts()
    conf.register_opts(tls_conf.opts, group="hypervisor_notifier")
    conf([], default_config_files=[])
    conf.set_override("ssl_ca_file", str(ca), "hypervisor_notifier")

    assert TLSSettings.from_conf(conf.hypervisor_notifier) == TLSSettings(str(ca))


def test_a_stop_with_nothing_left_to_confirm_does_not_wait(monkeypatch):
    """A stop requested while connecting: the pump read its wake-up, so it must not wait."""
    publisher = Publisher(MemoryOutbox(), access=BrokerAccess(TransportURL.parse("rabbit://h/")),
                          host="h", topology=Topology("x", "t"), heartbeat=0)  # fmt: skip

    real_select = select.select

    def select_waits(rlist: list, wlist: list, xlist: list, timeout: float = 0) -> tuple:
        if timeout:  # a poll (timeout 0) of the outbox's wake-up pipe is fine
            raise AssertionError("waited for the broker with nothing left to confirm")
        return real_select(rlist, wlist, xlist, timeout)

    monkeypatch.setattr(select, "select", select_waits)
    left, right = socket.socketpair()
    with left, right:
        publisher._connection, publisher._channel = Connection(DecryptedAhead(left)), object()
        publisher._connection.sock.buffered = 0
        publisher._deadline = time.monotonic() + 3600
        publisher._stop_requested.set()
        publisher._pump()
