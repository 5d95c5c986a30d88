"""Parse oslo.messaging-style transport URLs, and keep their secrets out of logs.

``rabbit://user:pass@host1:5672,user:pass@host2:5672/vhost`` names one
broker cluster with several hosts; clients fail over between them.
``rabbits://`` (or ``amqps://``, or oslo.messaging's ``rabbit://...?ssl=1``)
connects with TLS, by default to port 5671.
"""

from __future__ import annotations

import dataclasses
import re
import ssl
import urllib.parse

PLAIN_SCHEMES = ("rabbit", "amqp")
TLS_SCHEMES = ("rabbits", "amqps")
SCHEMES = PLAIN_SCHEMES + TLS_SCHEMES
DEFAULT_PORT = 5672
DEFAULT_TLS_PORT = 5671
#: Values of the ``ssl`` query parameter that turn TLS on (oslo.messaging's form).
_TRUE = ("1", "true", "yes", "on")
MASK = "****"

# Any user:password@ in a text: after "scheme://", after the "," of a
# multi-host URL, or in a mistyped URL ("rabbit:/u:pw@h"). A password with
# "/", "@" or "," must be percent-encoded in a URL anyway (a "," separates
# the hosts of a multi-host URL).
_CREDENTIALS = re.compile(r"(?P<head>[^\s:/@,]*:)[^\s@/,]*@")


def mask_secrets(text: str) -> str:
    """Replace every ``user:password@`` password in ``text`` by ``****``."""
    return _CREDENTIALS.sub(rf"\g<head>{MASK}@", text)


def describe_error(exc: BaseException) -> str:
    """An exception's text (its type when it has none), passwords masked: safe to log.

    A TLS failure is said plainly: which check failed, without OpenSSL's
    source location.
    """
    if isinstance(exc, ssl.SSLCertVerificationError):
        return mask_secrets(f"TLS: the broker's certificate is not trusted: {exc.verify_message}")
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return mask_secrets(f"TLS: {exc.reason}")
    return mask_secrets(str(exc) or type(exc).__name__)


@dataclasses.dataclass(frozen=True)
class BrokerHost:
    """One broker of a transport URL.

    Arguments:
        hostname: Host name or IP address (IPv6 without brackets).
        port: TCP port.
        username: Login user.
        password: Login password; never logged.

    """

    hostname: str
    port: int
    username: str
    password: str = dataclasses.field(repr=False)

    @property
    def address(self) -> str:
        """``host:port``, with IPv6 addresses in brackets."""
        host = f"[{self.hostname}]" if ":" in self.hostname else self.hostname
        return f"{host}:{self.port}"


@dataclasses.dataclass(frozen=True)
class TransportURL:
    """A parsed transport URL.

    Arguments:
        hosts: The brokers, in the order to try them.
        virtual_host: The AMQP virtual host (``/`` when the URL has none).
        tls: Connect with TLS (``rabbits://``, ``amqps://`` or ``?ssl=1``).

    """

    hosts: tuple[BrokerHost, ...]
    virtual_host: str
    tls: bool = False

    @classmethod
    def parse(cls, url: str) -> TransportURL:
        """Parse ``url``; raise ValueError saying what is wrong (never the password)."""
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in SCHEMES or not url.startswith(f"{parts.scheme}://"):
            scheme = f"transport {parts.scheme!r}" if parts.scheme else "a URL without a scheme"
            raise ValueError(
                f"{scheme} is not supported (use {' or '.join(s + '://' for s in SCHEMES)})"
            )
        if not parts.netloc:
            raise ValueError(f"{mask_secrets(url)} names no broker host")
        query = urllib.parse.parse_qs(parts.query)
        tls = parts.scheme in TLS_SCHEMES or query.get("ssl", [""])[-1].lower() in _TRUE
        port = DEFAULT_TLS_PORT if tls else DEFAULT_PORT
        hosts = tuple(_parse_host(item, url, port) for item in parts.netloc.split(","))
        vhost = urllib.parse.unquote(parts.path[1:]) if parts.path else ""
        return cls(hosts=hosts, virtual_host=vhost or "/", tls=tls)

    def masked(self) -> str:
        """The URL with every password replaced by ``****``: safe to log."""
        quote = urllib.parse.quote
        netloc = ",".join(f"{quote(h.username, safe='')}:{MASK}@{h.address}" for h in self.hosts)
        scheme = "rabbits" if self.tls else "rabbit"
        return f"{scheme}://{netloc}/{urllib.parse.quote(self.virtual_host, safe='')}"

    def kombu_urls(self) -> list[str]:
        """One ``pyamqp://`` URL per host (TLS is kombu's ``ssl`` argument, not the URL's)."""
        vhost = urllib.parse.quote(self.virtual_host, safe="")
        quote = urllib.parse.quote
        return [
            f"pyamqp://{quote(h.username, safe='')}:{quote(h.password, safe='')}"
            f"@{h.address}/{vhost}"
            for h in self.hosts
        ]


def _parse_host(item: str, url: str, default_port: int) -> BrokerHost:
    userinfo, _, hostport = item.rpartition("@")
    username, _, password = userinfo.partition(":")
    try:
        # urlsplit parses IPv6 brackets and validates the port for us.
        parts = urllib.parse.urlsplit(f"//{hostport}")
        port = default_port if parts.port is None else parts.port
        if not 0 < port < 65536:
            raise ValueError
    except ValueError:
        raise ValueError(f"bad broker address {hostport!r} in {mask_secrets(url)}") from None
    if not parts.hostname:
        raise ValueError(f"a broker in {mask_secrets(url)} has no host name")
    return BrokerHost(
        hostname=parts.hostname,
        port=port,
        username=urllib.parse.unquote(username) or "guest",
        password=urllib.parse.unquote(password) or "guest",
    )
