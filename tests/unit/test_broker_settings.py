"""[publisher] first, then oslo.messaging's groups: each setting and where it came from."""

from __future__ import annotations

import pytest

from hypervisor_notifier import conf as config
from hypervisor_notifier.notifier import broker


@pytest.fixture
def settings_of(tmp_path):
    def load(text: str) -> broker.BrokerSettings:
        path = tmp_path / "hypervisor-notifier.conf"
        path.write_text(text)
        return broker.from_conf(config.load(["--config-file", str(path)], prog="test"))

    return load


def test_nothing_set_uses_the_built_in_broker(settings_of):
    settings = settings_of("")

    assert settings.access.url.hosts[0].address == "127.0.0.1:5672"
    assert not settings.access.url.tls
    assert (settings.queue_type, settings.heartbeat) == ("classic", 60)
    assert "from default" not in settings.sources
    assert "transport_url rabbit://guest:****@127.0.0.1:5672/%2F (default)" in settings.sources


def test_notifications_url_before_default_url(settings_of):
    settings = settings_of(
        "[DEFAULT]\ntransport_url = rabbit://a:pa@default-host:5672/\n"
        "[oslo_messaging_notifications]\ntransport_url = rabbit://n:pn@notif-host:5672/\n"
    )

    assert settings.access.url.hosts[0].hostname == "notif-host"
    assert "from [oslo_messaging_notifications] transport_url" in settings.sources
    assert "pn" not in settings.sources.replace("notif", "")


def test_default_url_when_notifications_unset(settings_of):
    settings = settings_of("[DEFAULT]\ntransport_url = rabbit://a:pa@default-host:5672/\n")

    assert settings.access.url.hosts[0].hostname == "default-host"
    assert "from [DEFAULT] transport_url" in settings.sources


def test_publisher_wins(settings_of):
    settings = settings_of(
        "[oslo_messaging_notifications]\ntransport_url = rabbit://n:pn@notif-host:5672/\n"
        "[oslo_messaging_rabbit]\nrabbit_quorum_queue = true\nheartbeat_timeout_threshold = 9\n"
        "[publisher]\ntransport_url = rabbit://p:pp@pub-host:5672/\nqueue_type = classic\n"
        "heartbeat = 3\n"
    )

    assert settings.access.url.hosts[0].hostname == "pub-host"
    assert (settings.queue_type, settings.heartbeat) == ("classic", 3)


def test_rabbit_group_turns_tls_on_and_gives_the_files(settings_of, tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    settings = settings_of(
        "[oslo_messaging_notifications]\ntransport_url = rabbit://n:pn@broker:5671/\n"
        f"[oslo_messaging_rabbit]\nssl = true\nssl_ca_file = {ca}\nrabbit_quorum_queue = true\n"
        "heartbeat_timeout_threshold = 9\n"
    )

    assert settings.access.url.tls
    assert settings.access.tls.ca_file == str(ca)
    assert settings.transport_url.endswith("?ssl=1")
    assert (settings.queue_type, settings.heartbeat) == ("quorum", 9)
    assert "TLS on from [oslo_messaging_rabbit] ssl" in settings.sources
    assert f"ssl_ca_file {ca} from [oslo_messaging_rabbit] ssl_ca_file" in settings.sources


def test_a_missing_tls_file_names_the_group_it_came_from(settings_of):
    with pytest.raises(config.ConfigError, match=r"^\[oslo_messaging_rabbit\] ssl_ca_file "):
        settings_of("[oslo_messaging_rabbit]\nssl = true\nssl_ca_file = /nonexistent/ca.pem\n")


def test_a_bad_fallback_url_names_its_option_without_the_password(settings_of, tmp_path):
    with pytest.raises(config.ConfigError) as excinfo:
        settings_of("[DEFAULT]\ntransport_url = kafka://u:s3cret@h/\n")

    # One line naming the file, the section and the option.
    assert str(excinfo.value).startswith(
        f"{tmp_path / 'hypervisor-notifier.conf'}: [DEFAULT] transport_url: "
    )
    assert "s3cret" not in str(excinfo.value)
