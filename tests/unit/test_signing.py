"""Signed events: the signature, key rotation, replay protection, and the options."""

from __future__ import annotations

import datetime
import hashlib
import hmac
import json

import pytest
from oslo_config import cfg

from hypervisor_notifier import signing, wire
from hypervisor_notifier.conf import signing as signing_conf
from hypervisor_notifier.events import LifecycleEvent, MalformedEvent, utcnow
from hypervisor_notifier.signing import Replayed, Signer, Unverified, Verifier
from tests.factories import make_event

KEY = b"k" * 32
OLD_KEY = b"o" * 32


def signed_payload(event: LifecycleEvent, signer: Signer | None = None) -> dict:
    return (signer or Signer("current", KEY)).sign(event.to_payload())


def verifier(**kwargs) -> Verifier:
    return Verifier({"current": KEY, "previous": OLD_KEY}, **kwargs)


def test_the_signature_is_hmac_sha256_of_the_documented_canonical_form(wire_payload):
    # Written by hand from security.rst: sorted keys, no whitespace, ASCII.
    canonical = (
        '{"detail":"SHUTDOWN","event_id":"0f2b6a1e-4c1d-4f7b-9d59-3a0c2e8f5b11",'
        '"host":"compute1.example.org","hypervisor":"libvirt",'
        '"instance_name":"instance-0000002a",'
        '"instance_uuid":"6e9a4d5c-1b2f-4a8e-b3c7-d0e1f2a3b4c5",'
        '"occurred_at":"2024-02-29T23:59:58.123456Z","power_state":4,"reason":"STOPPED",'
        '"resync":false,"schema_version":"1.0","seq":42,"transition":"stopped"}'
    )
    expected = hmac.new(KEY, canonical.encode(), hashlib.sha256).hexdigest()

    Signer("2026-11", KEY).sign(wire_payload)

    assert wire_payload["signature"] == {"key_id": "2026-11", "alg": "hmac-sha256",
                                         "value": expected}  # fmt: skip


def test_a_signed_event_passes_and_is_marked_verified():
    event = make_event()
    verified = verifier().verify(signed_payload(event))
    assert verified == event
    assert verified.verified and not event.verified


def test_an_event_signed_with_the_previous_key_passes():
    event = make_event()
    assert verifier().verify(signed_payload(event, Signer("previous", OLD_KEY))).verified


def test_an_unsigned_event_is_unverified():
    with pytest.raises(Unverified, match="not signed"):
        verifier().verify(make_event().to_payload())


@pytest.mark.parametrize(
    ("field", "value"),
    [("transition", "started"), ("power_state", 1), ("host", "other"), ("seq", 43)],
)
def test_a_changed_field_breaks_the_signature(field, value):
    payload = signed_payload(make_event(seq=42))
    payload[field] = value
    with pytest.raises(Unverified, match="does not match"):
        verifier().verify(payload)


def test_a_field_added_after_signing_breaks_the_signature_and_one_signed_with_passes():
    payload = signed_payload(make_event())
    payload["added_by_1_2"] = "x"
    with pytest.raises(Unverified):
        verifier().verify(payload)

    payload = make_event().to_payload()
    payload["added_by_1_2"] = "x"
    assert verifier().verify(Signer("current", KEY).sign(payload)).verified


def test_a_signature_by_a_key_the_verifier_does_not_have_is_unverified_and_the_secret_unsaid():
    payload = signed_payload(make_event(), Signer("current", b"w" * 32))
    with pytest.raises(Unverified) as raised:
        verifier().verify(payload)
    assert "kkkk" not in str(raised.value) and "wwww" not in str(raised.value)

    payload = signed_payload(make_event(), Signer("stolen", b"w" * 32))
    with pytest.raises(Unverified, match="unknown key 'stolen'"):
        verifier().verify(payload)


@pytest.mark.parametrize(
    "signature",
    [
        "deadbeef",
        {"key_id": "current", "alg": "hmac-md5", "value": "00"},
        {"key_id": "current", "alg": "hmac-sha256", "value": 7},
        {"key_id": ["current"], "alg": "hmac-sha256", "value": "00"},
        {},
    ],
)
def test_a_malformed_signature_is_unverified(signature):
    payload = make_event().to_payload()
    payload["signature"] = signature
    with pytest.raises(Unverified):
        verifier().verify(payload)


def test_unverified_and_replayed_are_malformed_events_for_decoders():
    assert issubclass(Replayed, Unverified) and issubclass(Unverified, MalformedEvent)


def test_a_remembered_event_id_is_refused_and_a_forgotten_one_passes_again():
    check = verifier()
    event = make_event()
    check.verify(signed_payload(event))
    # Not remembered (the callback failed): the redelivery passes.
    check.verify(signed_payload(event))
    check.remember(event)
    with pytest.raises(Replayed, match="delivered before"):
        check.verify(signed_payload(event))


def test_an_event_older_than_max_age_or_from_the_future_is_refused():
    now = utcnow()
    check = verifier(max_age=600, max_clock_skew=60, clock=lambda: now)
    old = make_event(occurred_at=now - datetime.timedelta(seconds=601))
    future = make_event(occurred_at=now + datetime.timedelta(seconds=61))
    with pytest.raises(Replayed, match="601 s old"):
        check.verify(signed_payload(old))
    with pytest.raises(Replayed, match="in the future"):
        check.verify(signed_payload(future))
    edge = make_event(occurred_at=now - datetime.timedelta(seconds=599))
    assert check.verify(signed_payload(edge)).verified


def test_remembered_ids_are_forgotten_once_the_window_refuses_them_anyway():
    now = [utcnow()]
    check = verifier(max_age=10, clock=lambda: now[0])
    event = make_event(occurred_at=now[0] - datetime.timedelta(seconds=10))
    check.remember(event)  # expires at once: its window is over
    check.remember(make_event())
    check.check_fresh(make_event())
    assert len(check._seen) == 1


def test_a_short_key_is_refused_with_its_length_not_its_value():
    with pytest.raises(ValueError, match="is 5 bytes long") as raised:
        Signer("1", b"short")
    assert "short" not in str(raised.value).replace("bytes long", "")


def test_the_key_never_appears_in_a_repr():
    signer, check = Signer("1", KEY), verifier()
    assert "kkkk" not in repr(signer.__dict__) and "kkkk" not in repr(check.__dict__)


def test_wire_decode_with_a_verifier_checks_the_signature_before_the_fields():
    body = wire.encode(make_event(), Signer("current", KEY))
    assert wire.decode(body, verifier()).verified
    assert not wire.decode(body).verified  # a decoder without a key ignores it

    inner = json.loads(json.loads(body)["oslo.message"])
    inner["payload"]["seq"] = "not an int"
    forged = json.dumps({"oslo.version": "2.0", "oslo.message": json.dumps(inner)})
    with pytest.raises(Unverified):
        wire.decode(forged, verifier())


# -- options, in another project's group ----------------------------------------


@pytest.fixture
def nova_conf(tmp_path):
    """The options registered as the nova adapter does: in nova.conf's own group."""
    conf = cfg.ConfigOpts()
    conf.register_opts(signing_conf.opts, group="hypervisor_notifier")
    conf([], default_config_files=[])
    yield conf
    conf.reset()


def test_verifier_and_signer_from_options_in_any_group(nova_conf, tmp_path):
    key_file = tmp_path / "key"
    key_file.write_text("f" * 64 + "\n")
    key_file.chmod(0o600)
    nova_conf.set_override("key_file", str(key_file), "hypervisor_notifier")
    nova_conf.set_override("key_id", "2", "hypervisor_notifier")
    nova_conf.set_override("previous_key", "p" * 32, "hypervisor_notifier")
    nova_conf.set_override("max_age", 30, "hypervisor_notifier")

    check = Verifier.from_conf(nova_conf.hypervisor_notifier)
    signer = Signer.from_conf(nova_conf.hypervisor_notifier)

    assert check is not None and signer is not None
    assert sorted(check.key_ids) == ["0", "2"] and signer.key_id == "2"
    assert check.max_age == datetime.timedelta(seconds=30)
    event = make_event()
    assert check.verify(signer.sign(event.to_payload())).verified
    assert check.verify(Signer("0", b"p" * 32).sign(event.to_payload())).verified


def test_no_key_configured_means_no_signer_and_no_verifier(nova_conf):
    assert Signer.from_conf(nova_conf.hypervisor_notifier) is None
    assert Verifier.from_conf(nova_conf.hypervisor_notifier) is None


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"key": "k" * 32, "key_file": "/etc/key"}, "key and key_file are both set"),
        ({"key_file": "/nonexistent/key"}, "key_file '/nonexistent/key': No such file"),
        ({"previous_key": "p" * 32}, "previous_key is set but key is not"),
        ({"key": "k" * 32, "previous_key": "p" * 32, "previous_key_id": "1"}, "equals key_id"),
    ],
)
def test_inconsistent_options_are_named(nova_conf, overrides, message):
    for name, value in overrides.items():
        nova_conf.set_override(name, value, "hypervisor_notifier")
    with pytest.raises(ValueError, match=message):
        Verifier.from_conf(nova_conf.hypervisor_notifier)


def test_the_keys_are_secret_options():
    secret = {opt.name for opt in signing_conf.opts if opt.secret}
    assert secret == {"key", "previous_key"}
    assert signing.MIN_KEY_BYTES == 32


# -- fail closed -------------------------------------------------------------------


def key_file_of(tmp_path, content: str, mode: int = 0o600):
    path = tmp_path / "signing.key"
    path.write_text(content)
    path.chmod(mode)
    return path


@pytest.mark.parametrize("build", [Signer.from_conf, Verifier.from_conf])
@pytest.mark.parametrize("content", ["", "\n", "  \n\n"])
def test_an_empty_key_file_is_an_error_not_unsigned(nova_conf, tmp_path, build, content):
    path = key_file_of(tmp_path, content)
    nova_conf.set_override("key_file", str(path), "hypervisor_notifier")

    with pytest.raises(ValueError, match=rf"key_file '{path}' is empty"):
        build(nova_conf.hypervisor_notifier)


@pytest.mark.parametrize("build", [Signer.from_conf, Verifier.from_conf])
@pytest.mark.parametrize("value", ["", "   "])
def test_an_empty_inline_key_is_an_error_not_unsigned(nova_conf, build, value):
    nova_conf.set_override("key", value, "hypervisor_notifier")

    with pytest.raises(ValueError, match="key is set but empty"):
        build(nova_conf.hypervisor_notifier)


def test_an_empty_previous_key_file_is_an_error(nova_conf, tmp_path):
    nova_conf.set_override("key", "k" * 32, "hypervisor_notifier")
    nova_conf.set_override("previous_key_file", str(key_file_of(tmp_path, "")),
                           "hypervisor_notifier")  # fmt: skip

    with pytest.raises(ValueError, match=r"previous_key_file .* is empty"):
        Verifier.from_conf(nova_conf.hypervisor_notifier)


@pytest.mark.parametrize("build", [Signer.from_conf, Verifier.from_conf])
@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o620, 0o660])
def test_a_key_file_others_may_access_is_refused_naming_file_and_mode(
    nova_conf, tmp_path, build, mode
):
    secret = "s" * 64
    path = key_file_of(tmp_path, secret, mode)
    nova_conf.set_override("key_file", str(path), "hypervisor_notifier")

    with pytest.raises(ValueError) as raised:
        build(nova_conf.hypervisor_notifier)

    assert f"key_file '{path}' has mode {mode:04o}: group or others" in str(raised.value)
    assert "sss" not in str(raised.value)


@pytest.mark.parametrize("mode", [0o600, 0o400])
def test_a_key_file_of_its_owner_only_is_read(nova_conf, tmp_path, mode):
    path = key_file_of(tmp_path, "f" * 64 + "\n", mode)
    nova_conf.set_override("key_file", str(path), "hypervisor_notifier")

    assert Signer.from_conf(nova_conf.hypervisor_notifier) is not None


def test_a_directory_as_key_file_is_refused(nova_conf, tmp_path):
    (tmp_path / "keys").mkdir(mode=0o700)
    nova_conf.set_override("key_file", str(tmp_path / "keys"), "hypervisor_notifier")

    with pytest.raises(ValueError, match="is not a regular file"):
        Verifier.from_conf(nova_conf.hypervisor_notifier)


def test_a_short_key_file_is_refused_with_its_length_not_its_value(nova_conf, tmp_path):
    nova_conf.set_override("key_file", str(key_file_of(tmp_path, "tiny-key\n")),
                           "hypervisor_notifier")  # fmt: skip

    with pytest.raises(ValueError, match="is 8 bytes long") as raised:
        Verifier.from_conf(nova_conf.hypervisor_notifier)
    assert "tiny" not in str(raised.value)
