"""The broker the service publishes to: ``[publisher]``, else oslo.messaging's groups.

:func:`from_conf` turns the resolved settings (see
:func:`hypervisor_notifier.conf.oslo_messaging.broker_settings`) into what
the publisher, the preflight and ``hypervisor-events watch`` connect with,
and says where each came from, passwords masked.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from oslo_config import cfg

from hypervisor_notifier import wire
from hypervisor_notifier.conf import ConfigError, where
from hypervisor_notifier.conf import oslo_messaging as oslo_messaging_conf
from hypervisor_notifier.conf import publisher as publisher_conf
from hypervisor_notifier.tls import BrokerAccess, TLSSettings
from hypervisor_notifier.transport_url import TransportURL

TLS_FILES = ("ssl_ca_file", "ssl_cert_file", "ssl_key_file")


@dataclasses.dataclass(frozen=True)
class BrokerSettings:
    """Where and how to publish.

    Arguments:
        access: The brokers (TLS when the URL or ``[oslo_messaging_rabbit] ssl``
            says so) and the TLS files, checked readable.
        queue_type: ``classic`` or ``quorum``.
        heartbeat: AMQP heartbeat, in seconds (0: none).
        sources: One line naming each setting's value and source; no password.
        transport_url: The URL as text, ``ssl=1`` added when TLS was switched
            on by ``[oslo_messaging_rabbit] ssl`` (for clients that parse it).

    """

    access: BrokerAccess
    queue_type: str
    heartbeat: int
    sources: str
    transport_url: str = dataclasses.field(repr=False)


def from_conf(conf: cfg.ConfigOpts) -> BrokerSettings:
    """Resolve the broker settings; raise ConfigError naming the option that is wrong."""
    settings = oslo_messaging_conf.broker_settings(conf)
    url_setting = settings["transport_url"]
    try:
        url = TransportURL.parse(url_setting.value)
    except ValueError as exc:
        raise ConfigError(f"{_where(conf, url_setting)}: {exc}") from None
    raw = url_setting.value
    if settings["ssl"].value and not url.tls:
        url = dataclasses.replace(url, tls=True)
        raw += ("&" if "?" in raw else "?") + "ssl=1"
    tls = TLSSettings(*(settings[name].value for name in TLS_FILES))
    try:
        tls.check()
    except ValueError as exc:
        # The message starts with the option's name; name its group too.
        name = str(exc).split(" ", 1)[0]
        group = settings[name].source.split("]")[0] + "]" if name in settings else "[publisher]"
        raise ConfigError(f"{group} {exc}") from None
    described = [f"transport_url {url.masked()}{_from(url_setting)}"]
    described.append(f"TLS {'on' if url.tls else 'off'}" + _from(settings["ssl"]))
    for name in (*TLS_FILES, "queue_type", "heartbeat"):
        if settings[name].value is not None:
            described.append(f"{name} {settings[name].value}{_from(settings[name])}")
    return BrokerSettings(
        access=BrokerAccess(url, tls),
        queue_type=settings["queue_type"].value,
        heartbeat=settings["heartbeat"].value,
        sources="; ".join(described),
        transport_url=raw,
    )


def _where(conf: cfg.ConfigOpts, setting: oslo_messaging_conf.Setting) -> str:
    """``FILE: [group] option`` of a setting read from a file (its source, otherwise)."""
    group, _, option = setting.source.partition("] ")
    if not option:
        return setting.source
    return where(conf, group.lstrip("[").replace("DEFAULT", "") or None, option)


def _from(setting: oslo_messaging_conf.Setting) -> str:
    return f" from {setting.source}" if setting.source != "default" else " (default)"


def publisher_arguments(conf: cfg.ConfigOpts) -> dict[str, Any]:
    """The :class:`~.publisher.Publisher` arguments of ``[DEFAULT] host`` and ``[publisher]``.

    The broker settings fall back on oslo.messaging's groups (:func:`from_conf`).
    """
    opts = conf[publisher_conf.GROUP]
    settings = from_conf(conf)
    history = None
    if opts.history_stream:
        arguments = wire.stream_arguments(opts.history_max_age, opts.history_max_bytes)
        history = (opts.history_stream, arguments)
    return {
        "access": settings.access,
        "host": conf.host,
        "topology": wire.Topology(opts.exchange, opts.topic, settings.queue_type),
        "declare_host_queue": opts.declare_host_queue,
        "confirm_window": opts.confirm_window,
        "heartbeat": settings.heartbeat,
        "connect_timeout": opts.connect_timeout,
        "reconnect_interval_max": opts.reconnect_interval_max,
        "history": history,
    }
