"""The nova adapter's settings: its own group first, then oslo.messaging's groups, each sourced."""

from __future__ import annotations

import textwrap

import pytest
from oslo_config import cfg

from hypervisor_notifier.conf import nova as nova_conf
from hypervisor_notifier.consumer import nova_settings

PASSWORD = "s3cret-Pa55"
URL = f"rabbit://openstack:{PASSWORD}@10.0.0.5:5671//"


def nova_conf_from(tmp_path, text: str) -> cfg.ConfigOpts:
    """A ConfigOpts with what nova registers (host, state_path) and the adapter's group."""
    path = tmp_path / "nova.conf"
    path.write_text(textwrap.dedent(text))
    conf = cfg.ConfigOpts()
    conf.register_opts([cfg.StrOpt("host", default="compute1"), cfg.StrOpt("state_path")])
    conf.register_opts(nova_conf.all_opts, group=nova_conf.GROUP)
    nova_settings.register_oslo_messaging_opts(conf)
    conf(["--config-file", str(path)], project="nova")
    return conf


def test_kolla_ansibles_rendering_gives_the_url_tls_and_ca_with_their_sources(tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text("a CA\n")
    conf = nova_conf_from(
        tmp_path,
        f"""
        [DEFAULT]
        state_path = {tmp_path}
        transport_url = rabbit://openstack:other@10.0.0.9:5672//
        [oslo_messaging_notifications]
        transport_url = {URL}
        driver = messagingv2
        [oslo_messaging_rabbit]
        ssl = true
        ssl_ca_file = {ca}
        rabbit_quorum_queue = true
        heartbeat_timeout_threshold = 20
        """,
    )

    settings = nova_settings.resolve(conf)

    assert (settings.transport_url, settings.tls) == (URL, True)
    assert settings.tls_settings.ca_file == str(ca)
    assert (settings.queue_type, settings.heartbeat) == ("quorum", 20)
    assert settings.state_file == str(tmp_path / "hypervisor-notifier-compute1.sqlite")
    line = settings.describe()
    for expected in (
        "transport_url from [oslo_messaging_notifications] transport_url",
        "TLS from [oslo_messaging_rabbit] ssl",
        f"ssl_ca_file from [oslo_messaging_rabbit] ssl_ca_file ({ca})",
        "queue_type from [oslo_messaging_rabbit] rabbit_quorum_queue (quorum)",
        "heartbeat from [oslo_messaging_rabbit] heartbeat_timeout_threshold (20 s)",
        "state file from [DEFAULT] state_path",
    ):
        assert expected in line, line
    assert PASSWORD not in line and "other" not in line


def test_the_adapters_own_options_win(tmp_path):
    conf = nova_conf_from(
        tmp_path,
        f"""
        [DEFAULT]
        state_path = {tmp_path}
        [oslo_messaging_notifications]
        transport_url = {URL}
        [oslo_messaging_rabbit]
        ssl = true
        rabbit_quorum_queue = true
        [hypervisor_notifier]
        transport_url = rabbit://hn:pw@10.0.0.7:5672/
        queue_type = classic
        heartbeat = 0
        state_file = {tmp_path}/mine.sqlite
        """,
    )

    settings = nova_settings.resolve(conf)

    # oslo.messaging's ssl is about oslo.messaging's broker, not the one named here.
    assert (settings.transport_url, settings.tls) == ("rabbit://hn:pw@10.0.0.7:5672/", False)
    assert (settings.queue_type, settings.heartbeat) == ("classic", 0)
    assert settings.state_file == f"{tmp_path}/mine.sqlite"
    assert "transport_url from [hypervisor_notifier] transport_url" in settings.describe()
    assert "TLS" not in settings.sources


def test_default_transport_url_is_the_last_fallback(tmp_path):
    conf = nova_conf_from(tmp_path, f"[DEFAULT]\nstate_path = {tmp_path}\ntransport_url = {URL}\n")

    settings = nova_settings.resolve(conf)

    assert settings.transport_url == URL
    assert settings.sources["transport_url"] == "[DEFAULT] transport_url"
    assert (settings.tls, settings.queue_type, settings.heartbeat) == (False, "classic", 60)


def test_no_url_anywhere_names_every_place_it_may_be_set(tmp_path):
    conf = nova_conf_from(tmp_path, f"[DEFAULT]\nstate_path = {tmp_path}\n")

    with pytest.raises(ValueError, match=r"\[oslo_messaging_notifications\] transport_url"):
        nova_settings.resolve(conf)


def test_an_unreadable_fallback_ca_names_it_without_the_password(tmp_path):
    conf = nova_conf_from(
        tmp_path,
        f"""
        [DEFAULT]
        state_path = {tmp_path}
        [oslo_messaging_notifications]
        transport_url = {URL}
        [oslo_messaging_rabbit]
        ssl = true
        ssl_ca_file = {tmp_path}/missing.pem
        """,
    )

    with pytest.raises(ValueError, match=r"ssl_ca_file .*missing.pem.*: no such file") as raised:
        nova_settings.resolve(conf)
    assert PASSWORD not in str(raised.value)


def test_a_state_file_that_is_not_the_adapters_fails_the_start_naming_it(tmp_path):
    from hypervisor_notifier.consumer.nova import NovaEventSource

    notes = tmp_path / "notes.txt"
    notes.write_text("not a database\n" * 50)
    conf = nova_conf_from(
        tmp_path,
        f"""
        [DEFAULT]
        state_path = {tmp_path}
        transport_url = {URL}
        [hypervisor_notifier]
        state_file = {notes}
        """,
    )

    with pytest.raises(
        ValueError, match=rf"^\[hypervisor_notifier\] consumer state file '{notes}'"
    ):
        NovaEventSource.from_conf(conf, print)
    assert notes.read_text() == "not a database\n" * 50
