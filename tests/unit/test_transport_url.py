"""Transport URLs: parsing, kombu URLs, and never showing a password."""

from __future__ import annotations

import ssl

import kombu
import pytest

from hypervisor_notifier.transport_url import (
    BrokerHost,
    TransportURL,
    describe_error,
    mask_secrets,
)

# -- parse ------------------------------------------------------------------------------


def test_parse_a_single_host():
    url = TransportURL.parse("rabbit://nova:s3cret@broker1.example.org:5673/openstack")

    assert url.hosts == (BrokerHost("broker1.example.org", 5673, "nova", "s3cret"),)
    assert url.virtual_host == "openstack"


def test_parse_several_hosts_each_with_its_credentials():
    url = TransportURL.parse("rabbit://alice:pw-a@b1:5672,bob:pw-b@b2:5673,carol:pw-c@b3/vh")

    assert url.hosts == (
        BrokerHost("b1", 5672, "alice", "pw-a"),
        BrokerHost("b2", 5673, "bob", "pw-b"),
        BrokerHost("b3", 5672, "carol", "pw-c"),
    )
    assert url.virtual_host == "vh"


@pytest.mark.parametrize(
    ("url", "port", "virtual_host"),
    [
        ("rabbit://u:p@broker", 5672, "/"),
        ("rabbit://u:p@broker/", 5672, "/"),
        ("rabbit://u:p@broker:5671/", 5671, "/"),
        ("rabbit://u:p@broker/%2F", 5672, "/"),
        ("rabbit://u:p@broker/nova", 5672, "nova"),
    ],
)
def test_parse_defaults_to_port_5672_and_vhost_slash(url, port, virtual_host):
    parsed = TransportURL.parse(url)

    assert parsed.hosts[0].port == port
    assert parsed.virtual_host == virtual_host


@pytest.mark.parametrize(
    ("url", "tls", "port"),
    [
        ("rabbit://u:p@broker/", False, 5672),
        ("rabbits://u:p@broker/", True, 5671),
        ("amqps://u:p@broker:5999/", True, 5999),
        ("rabbit://u:p@broker/?ssl=1", True, 5671),
        ("rabbit://u:p@broker/?ssl=true", True, 5671),
        ("rabbit://u:p@broker/?ssl=0", False, 5672),
    ],
)
def test_tls_is_on_for_rabbits_amqps_or_ssl_1_and_defaults_to_port_5671(url, tls, port):
    parsed = TransportURL.parse(url)

    assert (parsed.tls, parsed.hosts[0].port) == (tls, port)
    assert parsed.masked().startswith("rabbits://" if tls else "rabbit://")


def test_a_tls_failure_is_described_in_one_line_without_openssls_location():
    untrusted = ssl.SSLCertVerificationError(
        1, "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: self-signed (_ssl.c:1006)"
    )
    untrusted.verify_message = "self-signed certificate in certificate chain"
    refused = ssl.SSLError(1, "[SSL: TLSV13_ALERT_CERTIFICATE_REQUIRED] alert (_ssl.c:2580)")
    refused.reason = "TLSV13_ALERT_CERTIFICATE_REQUIRED"

    assert describe_error(untrusted) == (
        "TLS: the broker's certificate is not trusted: "
        "self-signed certificate in certificate chain"
    )
    assert describe_error(refused) == "TLS: TLSV13_ALERT_CERTIFICATE_REQUIRED"


def test_parse_decodes_percent_encoded_user_password_and_vhost():
    url = TransportURL.parse("rabbit://us%40er:p%40ss%3Aw%2Fd%25@broker/v%2Fhost%20one")

    assert url.hosts[0].username == "us@er"
    assert url.hosts[0].password == "p@ss:w/d%"
    assert url.virtual_host == "v/host one"


@pytest.mark.parametrize(
    ("url", "hostname", "port"),
    [
        ("rabbit://u:p@[::1]:5673/", "::1", 5673),
        ("rabbit://u:p@[fd00::10]/", "fd00::10", 5672),
    ],
)
def test_parse_ipv6_addresses(url, hostname, port):
    host = TransportURL.parse(url).hosts[0]

    assert (host.hostname, host.port) == (hostname, port)
    assert host.address == f"[{hostname}]:{port}"


# -- errors -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "kafka://u:s3cret@broker:9092/",
        "http://u:s3cret@broker/",
        "",
        "rabbit://",
        "rabbit:///vhost",
        "rabbit://u:s3cret@/",
        "rabbit://u:s3cret@b1,/",
        "rabbit://u:s3cret@broker:amqp/",
        "rabbit://u:s3cret@broker:99999/",
        "rabbit://u:s3cret@broker:-1/",
        "rabbit://u:s3cret@[::1/",
        "rabbit://u:s3cret@broker:0/",
    ],
)
def test_parse_rejects_a_url_it_cannot_use(url):
    with pytest.raises(ValueError):
        TransportURL.parse(url)


@pytest.mark.parametrize(
    ("url", "passwords"),
    [
        ("kafka://u:s3cret@broker:9092/", ["s3cret"]),
        ("rabbit://u:s3cret@broker:amqp/", ["s3cret"]),
        ("rabbit://u:s3cret@broker:99999/", ["s3cret"]),
        ("rabbit://u:s3cret@/", ["s3cret"]),
        ("rabbit://u:p%40s%3Acret@broker:amqp/", ["p%40s%3Acret", "p@s:cret"]),
        ("rabbit://a:first-pw@b1:amqp,b:second-pw@b2/", ["first-pw", "second-pw"]),
        ("rabbit://a:first-pw@b1,b:second-pw@b2:amqp/", ["first-pw", "second-pw"]),
        # Typos an operator makes: one slash, no slash, no scheme.
        ("rabbit:/u:s3cret@broker/", ["s3cret"]),
        ("rabbit:u:s3cret@broker/", ["s3cret"]),
        ("//u:s3cret@broker/", ["s3cret"]),
    ],
)
def test_parse_error_never_shows_a_password(url, passwords):
    with pytest.raises(ValueError) as excinfo:
        TransportURL.parse(url)

    for password in passwords:
        assert password not in str(excinfo.value)


# -- masking ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "password"),
    [
        ("rabbit://nova:s3cret@broker:5672/", "s3cret"),
        ("rabbit://nova:p%40ss%3Aword@broker/", "p@ss:word"),
        ("rabbit://nova:p%40ss%3Aword@broker/", "p%40ss%3Aword"),
        ("rabbit://a:one-pw@b1,b:two-pw@b2:5673/vh", "one-pw"),
        ("rabbit://a:one-pw@b1,b:two-pw@b2:5673/vh", "two-pw"),
        ("rabbit://nova:s3cret@[::1]:5673/", "s3cret"),
    ],
)
def test_masked_url_never_shows_a_password_but_shows_the_brokers(url, password):
    parsed = TransportURL.parse(url)

    masked = parsed.masked()

    assert password not in masked
    for host in parsed.hosts:
        assert host.address in masked
        assert host.username in masked


def test_broker_host_repr_never_shows_the_password():
    assert "s3cret" not in repr(TransportURL.parse("rabbit://nova:s3cret@broker/"))


@pytest.mark.parametrize(
    ("text", "password", "kept"),
    [
        ("connecting to rabbit://nova:s3cret@broker:5672//", "s3cret", "nova"),
        ("error: [Errno 111] rabbit://nova:s3cret@broker/vh refused", "s3cret", "broker/vh"),
        ("kombu: amqp://nova:s3cret@broker:5672// unreachable", "s3cret", "broker:5672"),
        ("pyamqp://nova:p%40ss%3Aword@broker:5672/%2F", "p%40ss%3Aword", "broker"),
        ("rabbit://nova:pa:ss@broker/", "pa:ss", "broker"),
        ("URLs: rabbit://a:s3cret@b1/ and amqp://b:other-pw@b2/", "other-pw", "b2"),
        ("rabbit://a:first-pw@b1,b:second-pw@b2/", "second-pw", "b2"),
        # A port before the "," stays, and so does the second broker's user.
        ("rabbit://a:first-pw@b1:5672,b:second-pw@b2/", "second-pw", "b1:5672,b:****@b2"),
    ],
)
def test_mask_secrets_removes_every_password_from_text(text, password, kept):
    masked = mask_secrets(text)

    assert password not in masked
    assert kept in masked


# -- kombu ---------------------------------------------------------------------------------


def _kombu_view(connection: kombu.Connection) -> tuple:
    return (
        connection.hostname,
        connection.port,
        connection.userid,
        connection.password,
        connection.virtual_host,
    )


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "rabbit://nova:s3cret@broker:5673/openstack",
            [("broker", 5673, "nova", "s3cret", "openstack")],
        ),
        ("rabbit://nova:s3cret@broker", [("broker", 5672, "nova", "s3cret", "/")]),
        (
            "rabbit://us%40er:p%40ss%3Aw%2Fd@broker/v%2Fh",
            [("broker", 5672, "us@er", "p@ss:w/d", "v/h")],
        ),
        (
            "rabbit://a:pw-a@b1,b:pw-b@[::1]:5673/vh",
            [("b1", 5672, "a", "pw-a", "vh"), ("::1", 5673, "b", "pw-b", "vh")],
        ),
    ],
    ids=["plain", "defaults", "percent-encoded", "two-hosts-ipv6"],
)
def test_kombu_urls_give_kombu_each_hosts_address_credentials_and_vhost(url, expected):
    # kombu.Connection parses lazily: no broker is contacted.
    connections = [kombu.Connection(u) for u in TransportURL.parse(url).kombu_urls()]

    assert [_kombu_view(c) for c in connections] == expected
    # kombu's own URI of the connection carries the same (as kombu logs and reconnects with it).
    reparsed = [kombu.Connection(c.as_uri(include_password=True)) for c in connections]
    assert [_kombu_view(c) for c in reparsed] == expected
