"""Options of nova.conf's ``[hypervisor_notifier]`` group: the nova adapter's.

nova-compute registers them (``hypervisor_notifier.consumer.nova.install``);
they are listed for oslo-config-generator under the ``oslo.config.opts``
entry point ``hypervisor_notifier.nova``.
"""

from __future__ import annotations

from oslo_config import cfg

from hypervisor_notifier.conf import signing as signing_conf
from hypervisor_notifier.conf import tls as tls_conf

GROUP = "hypervisor_notifier"

opts = [
    cfg.StrOpt(
        "source",
        default="bus",
        choices=[
            (
                "bus",
                "nova acts on the events of the bus; the virt driver's own "
                "lifecycle events are discarded",
            ),
            ("driver", "nova acts on its virt driver's own lifecycle events; the adapter is off"),
        ],
        help="Where nova-compute takes guest lifecycle events from. Only one "
        "source is used, so no event is handled twice.",
    ),
    cfg.StrOpt(
        "transport_url",
        secret=True,
        help="The broker the notifiers publish to, as an oslo.messaging "
        "transport URL. Unset: [oslo_messaging_notifications] transport_url, "
        "then [DEFAULT] transport_url (TLS then also when [oslo_messaging_rabbit] "
        "ssl is true).",
    ),
    cfg.StrOpt("exchange", default="hypervisor", help="The notifiers' [publisher] exchange."),
    cfg.StrOpt("topic", default="hypervisor_events", help="The notifiers' [publisher] topic."),
    cfg.StrOpt(
        "queue_type",
        choices=["classic", "quorum"],
        help="The notifiers' [publisher] queue_type (their per-host queue is consumed). "
        "Unset: quorum when [oslo_messaging_rabbit] rabbit_quorum_queue is true, "
        "else classic.",
    ),
    cfg.IntOpt(
        "heartbeat",
        min=0,
        help="AMQP heartbeat to the broker, seconds (0: none). Unset: "
        "[oslo_messaging_rabbit] heartbeat_timeout_threshold (60 by default).",
    ),
    cfg.StrOpt(
        "state_file",
        help="Where the adapter keeps the ids of the events it handed to nova "
        "and each instance's last seq, so that a replayed or stale event is "
        "refused after a restart too (a small SQLite file, created if missing). "
        "Unset: hypervisor-notifier-<host>.sqlite in nova's state_path.",
    ),
    cfg.FloatOpt(
        "stopped_hold",
        default=15.0,
        min=0.0,
        help="Seconds a guest's 'stopped' is held before nova sees it, unless "
        "the guest shut itself down (those reach nova at once). A later event "
        "of the guest within the hold (the 'started' of a reboot) cancels it. "
        "0 delivers every event at once.",
    ),
]


#: Every option of the group: the adapter's, then the notifiers' signing key
#: (events are verified when it is set) and TLS to the broker (unset TLS files
#: fall back to [oslo_messaging_rabbit]'s).
all_opts = [*opts, *signing_conf.opts, *tls_conf.opts]


def list_opts() -> list[tuple[str, list[cfg.Opt]]]:
    """The options the adapter reads from nova.conf (for oslo-config-generator)."""
    return [(GROUP, all_opts)]
