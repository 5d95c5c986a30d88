"""The nova adapter's settings, with oslo.messaging's own nova.conf groups as fallbacks.

Deployment tools render nova.conf for oslo.messaging: kolla-ansible puts
the notification broker in ``[oslo_messaging_notifications] transport_url``
and TLS in ``[oslo_messaging_rabbit] ssl = true`` + ``ssl_ca_file``. Where
an option of ``[hypervisor_notifier]`` is unset, the adapter takes the
setting from there, and says where each came from:

==========================  ===================================================
setting                     taken from, first set wins
==========================  ===================================================
broker URL                  ``[hypervisor_notifier] transport_url``,
                            ``[oslo_messaging_notifications] transport_url``,
                            ``[DEFAULT] transport_url``
TLS                         the URL (``rabbits://``, ``?ssl=1``); for a URL of
                            oslo.messaging's groups also ``[oslo_messaging_rabbit]
                            ssl = true``
ssl_ca_file, ssl_cert_file, ``[hypervisor_notifier]``, then the same option of
ssl_key_file                ``[oslo_messaging_rabbit]``
queue_type                  ``[hypervisor_notifier] queue_type``, then ``quorum``
                            if ``[oslo_messaging_rabbit] rabbit_quorum_queue``
heartbeat                   ``[hypervisor_notifier] heartbeat``, then
                            ``[oslo_messaging_rabbit] heartbeat_timeout_threshold``
state file                  ``[hypervisor_notifier] state_file``, then
                            ``<[DEFAULT] state_path>/hypervisor-notifier-<host>.sqlite``
==========================  ===================================================

The broker's certificate is always verified (oslo.messaging skips the name
check without ``ssl_ca_file``; this adapter never does).
"""

from __future__ import annotations

import dataclasses
import os
import urllib.parse
from typing import Any

from oslo_config import cfg

from hypervisor_notifier.conf import nova as nova_conf
from hypervisor_notifier.tls import TLSSettings
from hypervisor_notifier.transport_url import TransportURL

NOTIFICATIONS = "oslo_messaging_notifications"
RABBIT = "oslo_messaging_rabbit"
#: oslo.messaging's heartbeat_timeout_threshold default, when oslo.messaging is absent.
DEFAULT_HEARTBEAT = 60


@dataclasses.dataclass(frozen=True)
class NovaSettings:
    """What the adapter connects with, and where each setting came from.

    Arguments:
        transport_url: The notifiers' broker (holds the password: never log it).
        tls: Connect with TLS even if the URL does not say so.
        tls_settings: CA, client certificate and key files.
        queue_type: ``classic`` or ``quorum``.
        heartbeat: AMQP heartbeat, seconds.
        state_file: Where the consumer keeps what it delivered.
        sources: ``{setting: "[group] option"}`` for the start line.

    """

    transport_url: str
    tls: bool
    tls_settings: TLSSettings
    queue_type: str
    heartbeat: int
    state_file: str
    sources: dict[str, str]

    def subscriber_options(self) -> dict[str, Any]:
        """These settings as :class:`~hypervisor_notifier.consumer.Subscriber` arguments."""
        return {
            "transport_url": self.transport_url,
            "queue_type": self.queue_type,
            "ssl_ca_file": self.tls_settings.ca_file,
            "ssl_cert_file": self.tls_settings.cert_file,
            "ssl_key_file": self.tls_settings.key_file,
            "force_tls": self.tls,
            "heartbeat": self.heartbeat,
            "state_file": self.state_file,
        }

    def describe(self) -> str:
        """``setting from [group] option`` for each setting, no secret: for the start line."""
        return ", ".join(f"{name} from {source}" for name, source in self.sources.items())


def register_oslo_messaging_opts(conf: cfg.ConfigOpts) -> None:
    """Register oslo.messaging's options the adapter falls back to (nova has them anyway).

    Registering the same options again is a no-op for oslo.config, so this is
    safe whether or not nova's messaging setup has registered them already.
    """
    try:
        from oslo_messaging import opts as oslo_messaging_opts
    except ImportError:  # not a nova host: only the adapter's own group counts
        return
    for group, options in oslo_messaging_opts.list_opts():
        if group in (None, "DEFAULT", NOTIFICATIONS, RABBIT):
            conf.register_opts(options, group=None if group == "DEFAULT" else group)


def _get(conf: cfg.ConfigOpts, group: str | None, name: str) -> object:
    """An option's value; None when that option is not registered (no oslo.messaging)."""
    try:
        return conf[group][name] if group else conf[name]
    except (cfg.NoSuchOptError, cfg.NoSuchGroupError):
        return None


def resolve(conf: cfg.ConfigOpts) -> NovaSettings:
    """The adapter's settings from nova's configuration (see the module's table).

    Raises:
        ValueError: No broker URL is set anywhere, or a TLS file is unusable
            (the text names the option, never the password).

    """
    group = nova_conf.GROUP
    own = conf[group]
    sources: dict[str, str] = {}
    url, url_source = None, None
    for where, value in (
        (group, own.transport_url),
        (NOTIFICATIONS, _get(conf, NOTIFICATIONS, "transport_url")),
        ("DEFAULT", _get(conf, None, "transport_url")),
    ):
        # oslo.messaging's own default, "rabbit://", names no broker: unset.
        if value and (where == group or urllib.parse.urlsplit(str(value)).netloc):
            url, url_source = str(value), f"[{where}] transport_url"
            break
    if url is None or url_source is None:
        raise ValueError(
            f"[{group}] transport_url (or [{NOTIFICATIONS}] transport_url, or [DEFAULT] "
            f"transport_url) must be set when [{group}] source is 'bus'"
        )
    sources["transport_url"] = url_source
    tls = False
    if TransportURL.parse(url).tls:
        sources["TLS"] = url_source
    elif url_source != f"[{group}] transport_url" and _get(conf, RABBIT, "ssl"):
        tls = True
        sources["TLS"] = f"[{RABBIT}] ssl"
    files = {}
    for name in ("ssl_ca_file", "ssl_cert_file", "ssl_key_file"):
        files[name] = own[name] or _get(conf, RABBIT, name) or None
        if files[name]:
            where = group if own[name] else RABBIT
            sources[name] = f"[{where}] {name} ({files[name]})"
    tls_settings = TLSSettings(files["ssl_ca_file"], files["ssl_cert_file"], files["ssl_key_file"])
    try:
        tls_settings.check()
    except ValueError as exc:
        raise ValueError(f"[{group}] or [{RABBIT}] {exc}") from None
    queue_type = own.queue_type
    if queue_type:
        sources["queue_type"] = f"[{group}] queue_type ({queue_type})"
    elif _get(conf, RABBIT, "rabbit_quorum_queue"):
        queue_type = "quorum"
        sources["queue_type"] = f"[{RABBIT}] rabbit_quorum_queue (quorum)"
    else:
        queue_type = "classic"
        sources["queue_type"] = "default (classic)"
    heartbeat = own.heartbeat
    if heartbeat is not None:
        sources["heartbeat"] = f"[{group}] heartbeat ({heartbeat} s)"
    else:
        threshold = _get(conf, RABBIT, "heartbeat_timeout_threshold")
        heartbeat = DEFAULT_HEARTBEAT if threshold is None else int(threshold)  # type: ignore[call-overload]
        sources["heartbeat"] = f"[{RABBIT}] heartbeat_timeout_threshold ({heartbeat} s)"
    state_file = own.state_file
    if state_file:
        sources["state file"] = f"[{group}] state_file ({state_file})"
    else:
        state_file = os.path.join(conf.state_path, f"hypervisor-notifier-{conf.host}.sqlite")
        sources["state file"] = f"[DEFAULT] state_path ({state_file})"
    return NovaSettings(url, tls, tls_settings, queue_type, heartbeat, state_file, sources)
