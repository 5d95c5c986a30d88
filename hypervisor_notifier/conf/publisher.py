"""Options of the ``[publisher]`` group."""

from __future__ import annotations

from oslo_config import cfg

from hypervisor_notifier.conf import tls

GROUP = "publisher"

#: The per-host queue's types (the wire contract's ``wire.QUEUE_TYPES``; conf imports nothing).
QUEUE_TYPES = ("classic", "quorum")

opts = [
    cfg.StrOpt(
        "transport_url",
        secret=True,
        help="Broker to publish to, as an oslo.messaging transport URL: "
        "rabbit://user:password@host:port[,user:password@host2:port]/vhost. "
        "With several hosts the publisher fails over between them. rabbits:// "
        "(or rabbit://...?ssl=1) connects with TLS, by default to port 5671: "
        "the broker's certificate is verified (ssl_ca_file) and its name "
        "checked against the URL's host name. Unset: [oslo_messaging_notifications] "
        "transport_url, else [DEFAULT] transport_url, else "
        "rabbit://guest:guest@127.0.0.1:5672/.",
    ),
    *tls.opts,
    cfg.StrOpt(
        "exchange",
        default="hypervisor",
        help="Durable topic exchange the events are published to.",
    ),
    cfg.StrOpt(
        "topic",
        default="hypervisor_events",
        regex=r"^[^\s*#]+$",
        help="First word of the routing key <topic>.<host>.info. An oslo.messaging "
        "notification listener on Target(topic='<topic>.<host>', exchange=<exchange>) "
        "receives the events.",
    ),
    cfg.StrOpt(
        "queue_type",
        choices=QUEUE_TYPES,
        help="Type of the durable per-host queue <topic>.<host> (classic or quorum). "
        "Unset: quorum if [oslo_messaging_rabbit] rabbit_quorum_queue is true, else classic. "
        "Subscribers must use the same type.",
    ),
    cfg.BoolOpt(
        "declare_host_queue",
        default=True,
        help="Declare the durable per-host queue <topic>.<host>, bound to this "
        "host's routing key, so events wait there while no subscriber runs (and "
        "declare it again when the broker returns an event as unroutable). When "
        "false, bind a queue to <topic>.<host>.info yourself: until one is bound, "
        "events wait in the outbox.",
    ),
    cfg.StrOpt(
        "history_stream",
        default="",
        help="Name of a RabbitMQ stream (x-queue-type stream) that also receives this "
        "host's events and keeps them for history_max_age: 'hypervisor-events history' "
        "and 'watch --since' replay from it. Give every host's notifier the same name "
        "(e.g. <topic>.history) for one stream of the whole cloud. Empty: none.",
    ),
    cfg.StrOpt(
        "history_max_age",
        default="7D",
        regex=r"^[0-9]+[YMDhms]$",
        help="How long the history stream keeps events (RabbitMQ's form: 7D, 12h, 30m).",
    ),
    cfg.IntOpt(
        "history_max_bytes",
        default=5 * 2**30,
        min=1,
        help="Bytes the history stream keeps at most; the oldest segments go first.",
    ),
    cfg.IntOpt(
        "confirm_window",
        default=256,
        min=1,
        help="Messages published but not yet confirmed by the broker, at most. "
        "Confirms are pipelined: a larger window gives more throughput on a "
        "slow link.",
    ),
    cfg.IntOpt(
        "heartbeat",
        min=0,
        help="AMQP heartbeat, in seconds; 0 disables it. Detects a dead broker "
        "connection when nothing is being published. Unset: [oslo_messaging_rabbit] "
        "heartbeat_timeout_threshold (60).",
    ),
    cfg.FloatOpt(
        "connect_timeout",
        default=5.0,
        min=0.1,
        help="Seconds to wait for a broker connection to open.",
    ),
    cfg.FloatOpt(
        "reconnect_interval_max",
        default=30.0,
        min=0.1,
        help="Largest delay, in seconds, between attempts to reconnect to the broker "
        "(the delay starts at 0.5 s and doubles, with jitter).",
    ),
]
