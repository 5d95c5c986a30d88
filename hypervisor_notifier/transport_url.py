"""Parse oslo.messaging-style transport URLs, and keep their secrets out of logs.

``rabbit://user:pass@host1:5672,user:pass@host2:5672/vhost`` names one
broker cluster with several hosts; clients fail over between them.
"""

from __future__ import annotations

import dataclasses
import re
import urllib.parse

SCHEMES = ("rabbit", "amqp")
DEFAULT_PORT = 5672
MASK = "****"

# Any user:password@ in a text: after "scheme://", after the "," of a
# multi-host URL, or in a mistyped URL ("rabbit:/u:pw@h"). A password with
# "/" or "@" must be percent-encoded in a URL anyway.
_CREDENTIALS = re.compile(r"(?P<head>[^\s:/@,]*:)[^\s@/]*@")


def mask_secrets(text: str) -> str:
    """Replace every ``user:password@`` password in ``text`` by ``****``."""
    return _CREDENTIALS.sub(rf"\g<head>{MASK}@", text)


def describe_error(exc: BaseException) -> str:
    """An exception's text (its type when it has none), passwords masked: safe to log."""
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

    """

    hosts: tuple[BrokerHost, ...]
    virtual_host: str

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
        hosts = tuple(_parse_host(item, url) for item in parts.netloc.split(","))
        vhost = urllib.parse.unquote(parts.path[1:]) if parts.path else ""
        return cls(hosts=hosts, virtual_host=vhost or "/")

    def masked(self) -> str:
        """The URL with every password replaced by ``****``: safe to log."""
        quote = urllib.parse.quote
        netloc = ",".join(f"{quote(h.username, safe='')}:{MASK}@{h.address}" for h in self.hosts)
        return f"rabbit://{netloc}/{urllib.parse.quote(self.virtual_host, safe='')}"

    def kombu_urls(self) -> list[str]:
        """One ``pyamqp://`` URL per host, for a kombu Connection with failover."""
        vhost = urllib.parse.quote(self.virtual_host, safe="")
        quote = urllib.parse.quote
        return [
            f"pyamqp://{quote(h.username, safe='')}:{quote(h.password, safe='')}"
            f"@{h.address}/{vhost}"
            for h in self.hosts
        ]


def _parse_host(item: str, url: str) -> BrokerHost:
    userinfo, _, hostport = item.rpartition("@")
    username, _, password = userinfo.partition(":")
    try:
        # urlsplit parses IPv6 brackets and validates the port for us.
        parts = urllib.parse.urlsplit(f"//{hostport}")
        port = DEFAULT_PORT if parts.port is None else parts.port
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
