"""Options of ``hypervisor-notifier-masakari``: the bus it consumes, and masakari's API.

Listed for oslo-config-generator under the ``oslo.config.opts`` entry point
``hypervisor_notifier.masakari`` (not with the notifier's options: keystoneauth1
is the ``masakari`` extra's).

- ``[hypervisor_notifier]``: the notifiers' bus (URL, exchange, topic), the
  queue this consumer reads every host's events from, the signing key events
  are verified with, and TLS to the broker.
- ``[masakari]``: keystoneauth1's usual options (``auth_type``, ``auth_url``,
  ``username``, ...; the session's ``cafile``, ``timeout``; the adapter's
  ``service_type``, ``valid_interfaces``, ``region_name``,
  ``endpoint_override``), plus how long a retry may wait.
"""

from __future__ import annotations

from keystoneauth1 import loading as ks_loading
from oslo_config import cfg
from oslo_log import log

from hypervisor_notifier.conf import signing as signing_conf
from hypervisor_notifier.conf import tls as tls_conf

BUS_GROUP = "hypervisor_notifier"
GROUP = "masakari"
#: masakari's service type in the keystone catalog.
SERVICE_TYPE = "instance-ha"

bus_opts = [
    cfg.StrOpt(
        "transport_url",
        secret=True,
        default="rabbit://guest:guest@127.0.0.1:5672/",
        help="The broker the notifiers publish to, as an oslo.messaging transport URL.",
    ),
    cfg.StrOpt("exchange", default="hypervisor", help="The notifiers' [publisher] exchange."),
    cfg.StrOpt("topic", default="hypervisor_events", help="The notifiers' [publisher] topic."),
    cfg.StrOpt(
        "queue",
        default="hypervisor_events.masakari",
        help="The durable queue this consumer reads every host's events from: events "
        "wait there while masakari or this consumer is down.",
    ),
    cfg.StrOpt(
        "queue_type",
        default="classic",
        choices=["classic", "quorum"],
        help="Type of that queue.",
    ),
    *signing_conf.opts,
    *tls_conf.opts,
]

masakari_opts = [
    cfg.FloatOpt(
        "retry_interval_max",
        default=60.0,
        min=0.1,
        help="Largest delay, in seconds, between two attempts to hand a notification to "
        "masakari while its API is down or failing. Attempts go on until it accepts: "
        "the event stays unacknowledged on the queue meanwhile, and later events wait "
        "behind it, so no notification is dropped or reordered.",
    ),
]


def register_opts(conf: cfg.ConfigOpts) -> None:
    """Register both groups, keystoneauth1's options included, and oslo.log's."""
    log.register_options(conf)
    conf.register_opts(bus_opts, group=BUS_GROUP)
    conf.register_opts(masakari_opts, group=GROUP)
    ks_loading.register_session_conf_options(conf, GROUP)
    ks_loading.register_auth_conf_options(conf, GROUP)
    ks_loading.register_adapter_conf_options(conf, GROUP)
    conf.set_default("service_type", SERVICE_TYPE, group=GROUP)


def own_opts() -> list[tuple[str | None, list[cfg.Opt]]]:
    """The consumer's own options (whose values ``conf.load`` checks at start)."""
    return [(BUS_GROUP, bus_opts), (GROUP, masakari_opts)]


def list_opts() -> list[tuple[str, list[cfg.Opt]]]:
    """The options of both groups (for oslo-config-generator)."""
    keystone = (
        ks_loading.get_session_conf_options()
        + ks_loading.get_auth_common_conf_options()
        + ks_loading.get_auth_plugin_conf_options("password")
        + ks_loading.get_adapter_conf_options(include_deprecated=False)
    )
    return [(BUS_GROUP, bus_opts), (GROUP, [*masakari_opts, *keystone])]
