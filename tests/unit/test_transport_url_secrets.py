"""Any password in a transport URL: percent-encoded it round-trips; unencoded it is never shown.

Passwords are drawn from the characters that break URLs (``/ ? # , % @ :``)
and non-ASCII letters, so that any echo of any piece of the
user:password@host part puts a non-ASCII character in the text: every error
is ASCII only.
"""

from __future__ import annotations

import subprocess
import sys
import urllib.parse

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from hypervisor_notifier.transport_url import TransportURL, mask_secrets

RESERVED = "/?#,%@:"
LETTERS = st.text(st.characters(min_codepoint=0x3B1, max_codepoint=0x3C9), min_size=1, max_size=4)
#: Runs of Greek letters between reserved characters.
PASSWORDS = st.lists(st.one_of(LETTERS, st.sampled_from(RESERVED)), min_size=1, max_size=8).map(
    "".join
)
#: Anything a password may hold (surrogates cannot be encoded in UTF-8).
ANY_TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=20)
HOSTS = st.lists(
    st.tuples(st.sampled_from(["b1", "broker.example.org", "10.0.0.5", "[fd00::1]"]),
              st.one_of(st.none(), st.integers(1, 65535))),
    min_size=1,
    max_size=3,
)  # fmt: skip


#: Parsing is fast; a loaded test machine is not: no per-example deadline.
NO_DEADLINE = settings(deadline=None)


def quote(text: str) -> str:
    return urllib.parse.quote(text, safe="")


def build(hosts, user: str, password: str, vhost: str = "") -> str:
    netloc = ",".join(
        f"{user}:{password}@{host}" + ("" if port is None else f":{port}") for host, port in hosts
    )
    return f"rabbit://{netloc}/{vhost}"


@NO_DEADLINE
@given(hosts=HOSTS, user=ANY_TEXT.filter(bool), password=ANY_TEXT, vhost=ANY_TEXT)
def test_a_percent_encoded_url_round_trips_any_user_password_and_vhost(hosts, user, password,
                                                                        vhost):  # fmt: skip
    url = TransportURL.parse(build(hosts, quote(user), quote(password), quote(vhost)))

    assert [(h.username, h.password) for h in url.hosts] == [(user, password)] * len(hosts)
    assert url.virtual_host == (vhost or "/")
    assert TransportURL.parse(url.unparse()) == url
    assert [h.port for h in url.hosts] == [port or 5672 for _, port in hosts]


@NO_DEADLINE
@given(hosts=HOSTS, text=ANY_TEXT)
def test_a_percent_encoded_password_is_in_no_log_form_of_the_url(hosts, text):
    password = f"pw-\u0436{text}"
    text = build(hosts, "nova", quote(password))
    url = TransportURL.parse(text)

    for shown in (url.masked(), mask_secrets(f"connecting to {text} failed"),
                  mask_secrets(url.unparse()), repr(url)):  # fmt: skip
        assert password not in shown and quote(password) not in shown


@NO_DEADLINE
@given(hosts=HOSTS, password=PASSWORDS)
def test_an_unencoded_password_is_read_right_or_refused_and_never_shown(hosts, password):
    # An unencoded "@" together with a "," can make a URL of other valid brokers: no parser
    # can tell, which is why the rule is to percent-encode.
    assume(not ("@" in password and "," in password))
    assume(not password.isascii())  # a piece of it shown would show a non-ASCII letter
    text = build(hosts, "nova", password)

    try:
        url = TransportURL.parse(text)
    except ValueError as exc:
        message = str(exc)
        assert password not in message
        assert message.isascii(), message
    else:
        assert [h.password for h in url.hosts] == [password] * len(hosts), "misread"
        assert set(password) <= set(":@") | {c for c in password if not c.isascii()}


@pytest.mark.parametrize(
    "url",
    [
        "rabbit://nova:pa/ss@broker/",  # would be host nova, port "pa", vhost "ss@broker"
        "rabbit://nova:1234/x@broker/",  # would be host nova, port 1234, vhost "x@broker"
        "rabbit://nova:12,x@broker/",  # would be two brokers: nova:12 and broker
        "rabbit://nova:ab#cd@broker/",  # would end at the fragment
        "rabbit://nova:ab?cd@broker/",
        "rabbit://nova:a@b,cd@broker/",  # "cd" would be a user without a password
        "rabbit://nova:50%@broker/",
        "rabbit://nova:%FF%FE@broker/",  # not UTF-8
    ],
)
def test_an_unencoded_reserved_character_is_refused_with_the_rule(url):
    with pytest.raises(ValueError, match=r"must be percent-encoded|not UTF-8") as raised:
        TransportURL.parse(url)
    assert "nova" not in str(raised.value)


@pytest.mark.parametrize(
    ("url", "password"),
    [
        ("rabbit://nova:pa:ss@broker/", "pa:ss"),  # oslo.messaging splits at the first ":"
        ("rabbit://nova:p@ss@broker/", "p@ss"),  # ... and at the last "@"
        ("rabbit://nova:pässwörd@broker/", "pässwörd"),
        ("rabbit://nova:p%C3%A4ss%2F%2C%23%40%25@broker/", "päss/,#@%"),
    ],
)
def test_what_oslo_messaging_reads_right_is_read_right(url, password):
    assert TransportURL.parse(url).hosts[0].password == password
    assert password not in mask_secrets(f"error: {url}")


def run_tool(*args: str, stdin: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hypervisor_notifier.transport_url", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_the_shell_tool_gives_the_vhost_and_the_url_with_other_credentials():
    password = "p/a,s#s@w:o%rd é"
    nova = "rabbit://stackrabbit:x@r1:5672,stackrabbit:y@[::1]/nova%2Fcell1"

    vhost = run_tool("vhost", stdin=nova + "\n")
    replaced = run_tool("with-credentials", "hn-user", stdin=f"{nova}\n{password}\n")

    assert (vhost.returncode, vhost.stdout) == (0, "nova/cell1\n")
    assert replaced.returncode == 0, replaced.stderr
    url = TransportURL.parse(replaced.stdout.strip())
    assert [(h.address, h.username, h.password) for h in url.hosts] == [
        ("r1:5672", "hn-user", password),
        ("[::1]:5672", "hn-user", password),
    ]
    assert url.virtual_host == "nova/cell1"


def test_the_shell_tool_refuses_a_bad_url_in_one_line_without_its_secret():
    result = run_tool("vhost", stdin="rabbit://nova:se/cret@broker/\n")

    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "error: transport URL:" in result.stderr
    assert "cret" not in result.stderr and "nova" not in result.stderr
