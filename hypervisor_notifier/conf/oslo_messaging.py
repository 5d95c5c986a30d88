"""oslo.messaging's own options, read as fallbacks of ``[publisher]``.

Deployment tools (kolla-ansible, openstack-ansible) render the broker in
oslo.messaging's groups: the notification URL in ``[oslo_messaging_notifications]
transport_url`` (else ``[DEFAULT] transport_url``), TLS, quorum queues and
the heartbeat in ``[oslo_messaging_rabbit]``. The service reads them where
its ``[publisher]`` options are unset, so the configuration those tools
already write works as it is. The options here have oslo.messaging's names,
types and defaults.

:func:`broker_settings` resolves each setting and says where it came from.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from oslo_config import cfg

NOTIFICATIONS = "oslo_messaging_notifications"
RABBIT = "oslo_messaging_rabbit"
PUBLISHER = "publisher"
#: The built-in broker when no group names one.
DEFAULT_URL = "rabbit://guest:guest@127.0.0.1:5672/"

default_opts = [
    cfg.StrOpt(
        "transport_url",
        secret=True,
        help="oslo.messaging's broker URL: the service publishes there when neither "
        "[publisher] transport_url nor [oslo_messaging_notifications] transport_url is set.",
    ),
]

notifications_opts = [
    cfg.StrOpt(
        "transport_url",
        secret=True,
        help="oslo.messaging's notification broker URL: the service publishes there "
        "when [publisher] transport_url is not set.",
    ),
]

rabbit_opts = [
    cfg.BoolOpt(
        "ssl",
        default=False,
        help="oslo.messaging's TLS switch: true connects to the broker with TLS "
        "(the certificate verified, its name checked), whatever the URL's scheme.",
    ),
    cfg.StrOpt(
        "ssl_ca_file",
        default="",
        help="oslo.messaging's CA file; used when [publisher] ssl_ca_file is unset.",
    ),
    cfg.StrOpt(
        "ssl_cert_file",
        default="",
        help="oslo.messaging's client certificate; used when [publisher] ssl_cert_file is unset.",
    ),
    cfg.StrOpt(
        "ssl_key_file",
        default="",
        help="oslo.messaging's client key; used when [publisher] ssl_key_file is unset.",
    ),
    cfg.BoolOpt(
        "rabbit_quorum_queue",
        default=False,
        help="oslo.messaging's quorum queue switch: true makes the per-host queue a "
        "quorum queue when [publisher] queue_type is unset.",
    ),
    cfg.IntOpt(
        "heartbeat_timeout_threshold",
        default=60,
        min=0,
        help="oslo.messaging's heartbeat, in seconds (0 disables it); used when "
        "[publisher] heartbeat is unset.",
    ),
]


def list_opts() -> list[tuple[str | None, list[cfg.Opt]]]:
    """The ``(group, options)`` pairs of this module."""
    return [(None, default_opts), (NOTIFICATIONS, notifications_opts), (RABBIT, rabbit_opts)]


@dataclasses.dataclass(frozen=True)
class Setting:
    """One resolved broker setting.

    Arguments:
        value: Its value.
        source: Where it came from: ``[group] option``, or ``default``.

    """

    value: Any
    source: str


def _is_set(conf: cfg.ConfigOpts, group: str | None, name: str) -> bool:
    """Whether ``[group] name`` was given a value (not left at its default, nor empty)."""
    value = getattr(conf[group] if group else conf, name)
    where = conf.get_location(name, group)
    if value is None or value == "":
        return False
    return where is None or where.location is not cfg.Locations.opt_default


def _first(conf: cfg.ConfigOpts, *candidates: tuple[str | None, str], default: Any) -> Setting:
    """The first candidate ``(group, option)`` that is set, else ``default``."""
    for group, name in candidates:
        if _is_set(conf, group, name):
            value = getattr(conf[group] if group else conf, name)
            return Setting(value, f"[{group or 'DEFAULT'}] {name}")
    return Setting(default, "default")


def broker_settings(conf: cfg.ConfigOpts) -> dict[str, Setting]:
    """The publisher's broker settings, each from ``[publisher]`` or its oslo.messaging fallback.

    Keys: ``transport_url``, ``ssl`` (TLS forced on), ``ssl_ca_file``,
    ``ssl_cert_file``, ``ssl_key_file``, ``queue_type``, ``heartbeat``.
    """
    rabbit = conf[RABBIT]
    settings = {
        "transport_url": _first(
            conf,
            (PUBLISHER, "transport_url"),
            (NOTIFICATIONS, "transport_url"),
            (None, "transport_url"),
            default=DEFAULT_URL,
        ),
        "ssl": _first(conf, (RABBIT, "ssl"), default=False),
        "heartbeat": _first(
            conf,
            (PUBLISHER, "heartbeat"),
            (RABBIT, "heartbeat_timeout_threshold"),
            default=rabbit.heartbeat_timeout_threshold,
        ),
    }
    for name in ("ssl_ca_file", "ssl_cert_file", "ssl_key_file"):
        settings[name] = _first(conf, (PUBLISHER, name), (RABBIT, name), default=None)
    if _is_set(conf, PUBLISHER, "queue_type"):
        settings["queue_type"] = Setting(conf[PUBLISHER].queue_type, "[publisher] queue_type")
    elif _is_set(conf, RABBIT, "rabbit_quorum_queue") and rabbit.rabbit_quorum_queue:
        settings["queue_type"] = Setting("quorum", f"[{RABBIT}] rabbit_quorum_queue")
    else:
        settings["queue_type"] = Setting("classic", "default")
    return settings
