"""TLS to the broker: the client's settings, and how py-amqp and kombu take them.

The broker's certificate is always verified, against ``ca_file`` (or the
system's CA store), and its name checked against the host name of the
transport URL. A client certificate is optional (for brokers that require
one, or authenticate with it). :class:`BrokerAccess` pairs them with the
transport URL, which says whether TLS is used at all.
"""

from __future__ import annotations

import dataclasses
import os
import ssl
from typing import Any, Literal

from hypervisor_notifier.transport_url import BrokerHost, TransportURL


@dataclasses.dataclass(frozen=True)
class TLSSettings:
    """How to connect to the broker over TLS.

    Arguments:
        ca_file: PEM bundle of the CA(s) that signed the broker's certificate;
            None for the system's CA store.
        cert_file: PEM client certificate (chain), presented to the broker.
        key_file: The client certificate's private key (PEM); None when
            ``cert_file`` holds it too.

    """

    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None

    @classmethod
    def from_conf(cls, group: Any) -> TLSSettings:
        """Build from a ``conf/tls.py`` option group's values, checked (see :meth:`check`).

        Arguments:
            group: The group's values (e.g. ``conf.publisher``), in any oslo.config group.

        """
        settings = cls(group.ssl_ca_file, group.ssl_cert_file, group.ssl_key_file)
        settings.check()
        return settings

    def check(self) -> None:
        """Raise ValueError naming the setting if a file is unreadable, or a key has no cert."""
        if self.key_file and not self.cert_file:
            raise ValueError("ssl_key_file is set but ssl_cert_file is not")
        for name, path in (
            ("ssl_ca_file", self.ca_file),
            ("ssl_cert_file", self.cert_file),
            ("ssl_key_file", self.key_file),
        ):
            if path and not os.access(path, os.R_OK):
                reason = "not readable" if os.path.exists(path) else "no such file"
                raise ValueError(f"{name} {path!r}: {reason}")

    def amqp_ssl(self, server_hostname: str) -> dict[str, Any]:
        """py-amqp's (and kombu's) ``ssl`` argument for connecting to ``server_hostname``.

        Giving ``server_hostname`` makes py-amqp check the certificate's name
        (and send SNI); ``cert_reqs`` makes the verification explicit.
        """
        options: dict[str, Any] = {
            "server_hostname": server_hostname,
            "cert_reqs": ssl.CERT_REQUIRED,
        }
        if self.ca_file:
            options["ca_certs"] = self.ca_file
        if self.cert_file:
            options["certfile"] = self.cert_file
            options["keyfile"] = self.key_file
        return options


@dataclasses.dataclass(frozen=True)
class BrokerAccess:
    """How a client reaches the broker(s): their URL, and the TLS files if the URL asks for TLS.

    Publisher, subscriber, history reader and preflight all connect with it,
    so TLS is used exactly when the URL says so (``rabbits://``, ``ssl=1``).

    Arguments:
        url: The broker(s), in failover order.
        tls: The certificates, used only if ``url.tls``.

    """

    url: TransportURL
    tls: TLSSettings = TLSSettings()

    def amqp_ssl(self, broker: BrokerHost) -> dict[str, Any] | Literal[False]:
        """py-amqp's (and kombu's) ``ssl`` argument for ``broker``: False without TLS."""
        return self.tls.amqp_ssl(broker.hostname) if self.url.tls else False
