"""Parse oslo.messaging-style transport URLs, and keep their secrets out of logs.

``rabbit://user:pass@host1:5672,user:pass@host2:5672/vhost`` names one
broker cluster with several hosts; clients fail over between them.
``rabbits://`` (or ``amqps://``, or oslo.messaging's ``rabbit://...?ssl=1``)
connects with TLS, by default to port 5671.

User names and passwords are percent-encoded, as in any URL and as
oslo.messaging expects: ``/`` is ``%2F``, ``?`` ``%3F``, ``#`` ``%23``, ``,``
``%2C``, ``%`` ``%25``, ``@`` ``%40``, ``:`` ``%3A`` (non-ASCII: its UTF-8 bytes,
e.g. ``é`` is ``%C3%A9``). As oslo.messaging does, an unencoded ``:`` or ``@``
in a password is still read right (the user ends at the first ``:``, the
password at the last ``@``). An unencoded ``/``, ``?``, ``#``, ``,`` or a lone
``%`` would silently make another host, port or virtual host of the rest:
where the URL shows one (an ``@`` after the hosts, a broker without
credentials beside brokers with them, a user without a password), it is
refused. No error text contains any part of the user:password@host part.

``python -m hypervisor_notifier.transport_url`` answers shell scripts (the
devstack plugin) with this same parser: see :func:`main`.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import ssl
import sys
import urllib.parse
from collections.abc import Sequence

PLAIN_SCHEMES = ("rabbit", "amqp")
TLS_SCHEMES = ("rabbits", "amqps")
SCHEMES = PLAIN_SCHEMES + TLS_SCHEMES
DEFAULT_PORT = 5672
DEFAULT_TLS_PORT = 5671
#: Values of the ``ssl`` query parameter that turn TLS on (oslo.messaging's form).
_TRUE = ("1", "true", "yes", "on")
MASK = "****"
#: Said with every error that an unencoded character may have caused.
ENCODING_HINT = (
    "a '/', '?', '#', ',' or '%' in a user name or password must be percent-encoded "
    "(%2F, %3F, %23, %2C, %25)"
)

# Any user:password@ in a text: after "scheme://", after the "," of a
# multi-host URL, or in a mistyped URL ("rabbit:/u:pw@h"). The password
# ends at the last "@" before the next "/", "," or space: an unencoded "@"
# in it (which oslo.messaging reads right) is masked too.
_CREDENTIALS = re.compile(r"(?P<head>[^\s:/@,]*:)[^\s/,]*@")
_SCHEME = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://")
# RFC 3986: the authority (the hosts) ends at the first "/", "?" or "#".
_AUTHORITY = re.compile(r"[^/?#]*")
_LONE_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")
_HOSTNAME = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9._-]*[A-Za-z0-9_])?\.?")
_PORT = re.compile(r"[0-9]{1,5}")
_USE = " or ".join(f"{scheme}://" for scheme in SCHEMES)


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
        """Parse ``url``; raise ValueError saying what is wrong.

        The error names the broker by its position, never by anything of
        the user:password@host part: with an unencoded character in a
        password, any piece of that part may be a piece of the password.
        """
        match = _SCHEME.match(url)
        if match is None:
            raise ValueError(f"not a URL of the form {_USE}")
        scheme = match["scheme"].lower()
        if scheme not in SCHEMES:
            raise ValueError(f"transport {scheme!r} is not supported (use {_USE})")
        rest = url[match.end() :]
        netloc = _AUTHORITY.match(rest).group()  # type: ignore[union-attr]  # always matches
        tail = rest[len(netloc) :]
        if "@" in tail:
            raise ValueError(
                f"an '@' after the broker hosts: {ENCODING_HINT}; "
                "an '@' in the virtual host too (%40)"
            )
        path, _, query = tail.partition("?")
        if "#" in tail:
            raise ValueError(f"a '#' after the broker hosts: {ENCODING_HINT}")
        if _LONE_PERCENT.search(path):
            raise ValueError("a '%' in the virtual host must be written %25")
        tls = scheme in TLS_SCHEMES or (
            urllib.parse.parse_qs(query).get("ssl", [""])[-1].lower() in _TRUE
        )
        items = netloc.split(",")
        if not netloc:
            raise ValueError("the URL names no broker host")
        with_credentials = sum(1 for item in items if "@" in item)
        if 0 < with_credentials < len(items):
            raise ValueError(f"some brokers have user:password@ and others not: {ENCODING_HINT}")
        port = DEFAULT_TLS_PORT if tls else DEFAULT_PORT
        hosts = tuple(
            _parse_host(
                item, f"broker {number} of {len(items)}" if len(items) > 1 else "the broker", port
            )
            for number, item in enumerate(items, 1)
        )
        vhost = urllib.parse.unquote(path[1:], errors="strict") if path else ""
        return cls(hosts=hosts, virtual_host=vhost or "/", tls=tls)

    def masked(self) -> str:
        """The URL with every password replaced by ``****``: safe to log."""
        quote = urllib.parse.quote
        netloc = ",".join(f"{quote(h.username, safe='')}:{MASK}@{h.address}" for h in self.hosts)
        scheme = "rabbits" if self.tls else "rabbit"
        return f"{scheme}://{netloc}/{urllib.parse.quote(self.virtual_host, safe='')}"

    def unparse(self) -> str:
        """The URL, every part percent-encoded: it parses back to this one. Holds the passwords."""
        scheme = "rabbits" if self.tls else "rabbit"
        # The default vhost as oslo.messaging's URLs write it: "rabbit://host/".
        vhost = "" if self.virtual_host == "/" else _quote(self.virtual_host)
        return f"{scheme}://{','.join(_netloc(h) for h in self.hosts)}/{vhost}"

    def with_credentials(self, username: str, password: str) -> TransportURL:
        """The same brokers and virtual host, each with ``username`` and ``password``."""
        hosts = tuple(
            dataclasses.replace(h, username=username, password=password) for h in self.hosts
        )
        return dataclasses.replace(self, hosts=hosts)

    def kombu_urls(self) -> list[str]:
        """One ``pyamqp://`` URL per host (TLS is kombu's ``ssl`` argument, not the URL's)."""
        return [f"pyamqp://{_netloc(h)}/{_quote(self.virtual_host)}" for h in self.hosts]


def _quote(text: str) -> str:
    return urllib.parse.quote(text, safe="")


def _netloc(host: BrokerHost) -> str:
    return f"{_quote(host.username)}:{_quote(host.password)}@{host.address}"


def _unquote(text: str, what: str) -> str:
    """Percent-decode ``text`` (UTF-8); the error names ``what``, never the text."""
    if _LONE_PERCENT.search(text):
        raise ValueError(f"{what}: {ENCODING_HINT}")
    try:
        return urllib.parse.unquote(text, errors="strict")
    except UnicodeDecodeError:
        raise ValueError(f"{what}: a percent-encoded user name or password is not UTF-8") from None


def _parse_host(item: str, which: str, default_port: int) -> BrokerHost:
    username, password = "guest", "guest"
    userinfo, at, hostport = item.rpartition("@")
    if at:
        user, colon, secret = userinfo.partition(":")
        if not colon:
            raise ValueError(f"{which} has a user name but no password: {ENCODING_HINT}")
        if not user:
            raise ValueError(f"{which} has a password but no user name")
        username = _unquote(user, which)
        password = _unquote(secret, which)
    hostname, port = _split_host_port(hostport, which, default_port)
    return BrokerHost(hostname=hostname, port=port, username=username, password=password)


def _split_host_port(hostport: str, which: str, default_port: int) -> tuple[str, int]:
    if hostport.startswith("["):
        address, bracket, port_text = hostport[1:].partition("]")
        if not bracket or not re.fullmatch(r"[0-9A-Fa-f:.]+", address) or ":" not in address:
            raise ValueError(f"{which} has no valid IPv6 address in [brackets]")
        hostname = address
        if port_text and not port_text.startswith(":"):
            raise ValueError(f"{which}: only ':port' may follow the IPv6 address")
        port_text = port_text[1:] if port_text else ""
        colon = bool(port_text) or hostport.endswith(":")
    else:
        hostname, colon_text, port_text = hostport.partition(":")
        colon = bool(colon_text)
        if not hostname:
            raise ValueError(f"{which} has no host name")
        if not _HOSTNAME.fullmatch(hostname):
            raise ValueError(f"{which} has no valid host name (or {ENCODING_HINT})")
    if not colon:
        return hostname, default_port
    port = int(port_text) if _PORT.fullmatch(port_text) else 0
    if not 0 < port < 65536:
        raise ValueError(f"{which} has no port from 1 to 65535 after its ':' (or {ENCODING_HINT})")
    return hostname, port


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m hypervisor_notifier.transport_url``: this parser, for shell scripts.

    The URL (and the password) come on standard input, never as arguments:
    a process's arguments are visible to every user of the host.
    """
    parser = argparse.ArgumentParser(
        prog="python -m hypervisor_notifier.transport_url",
        description="Read a transport URL from the first line of standard input.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("vhost", help="print its virtual host, decoded ('/' when it has none)")
    credentials = commands.add_parser(
        "with-credentials",
        help="print it with USER and the password (the second line of standard input) "
        "on every broker, percent-encoded",
    )
    credentials.add_argument("user")
    args = parser.parse_args(argv)
    lines = sys.stdin.read().split("\n")
    try:
        url = TransportURL.parse(lines[0].strip())
    except ValueError as exc:
        print(f"{parser.prog}: error: transport URL: {exc}", file=sys.stderr)
        return 2
    if args.command == "vhost":
        print(url.virtual_host)
    else:
        password = lines[1] if len(lines) > 1 else ""
        print(url.with_credentials(args.user, password).unparse())
    return 0


if __name__ == "__main__":
    sys.exit(main())
