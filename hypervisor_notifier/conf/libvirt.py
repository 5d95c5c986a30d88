"""Options of the ``[libvirt]`` group."""

from __future__ import annotations

from oslo_config import cfg

GROUP = "libvirt"

opts = [
    cfg.StrOpt(
        "connection_uri",
        default="qemu:///system",
        help="libvirt connection URI to watch, e.g. qemu:///system on a compute "
        "host or test+unix:///default for libvirt's test driver served by libvirtd.",
    ),
    cfg.BoolOpt(
        "read_only",
        default=True,
        help="Open a read-only connection: events and listing need no more.",
    ),
    cfg.FloatOpt(
        "connect_timeout",
        default=10.0,
        min=0.1,
        help="Seconds to wait for a connection to open. A hung libvirtd can "
        "block an open forever; the attempt is abandoned and retried.",
    ),
    cfg.FloatOpt(
        "reconnect_interval_max",
        default=30.0,
        min=0.1,
        help="Largest delay, in seconds, between attempts to reconnect to libvirt "
        "(the delay starts at 0.5 s and doubles).",
    ),
    cfg.BoolOpt(
        "report_inactive",
        default=True,
        help="Report shut-off (defined, not running) guests too. A resync then "
        "sees every guest's state, including a guest destroyed while the service "
        "was away.",
    ),
    cfg.BoolOpt(
        "report_foreign",
        default=False,
        help="Report guests nova did not launch (libguestfs appliances, anything "
        "without nova's metadata namespace http://openstack.org/xmlns/libvirt/nova/1.1 "
        "or 1.0). Off by default: nova only needs its own guests.",
    ),
    cfg.BoolOpt(
        "report_domain0",
        default=False,
        help="Report Xen's Domain-0 (domain ID 0), the host itself.",
    ),
    cfg.IntOpt(
        "keepalive_interval",
        default=5,
        min=0,
        help="Seconds between libvirt keepalive probes; 0 disables them. With "
        "keepalive_count they detect a daemon that hangs without closing the socket.",
    ),
    cfg.IntOpt(
        "keepalive_count",
        default=3,
        min=0,
        help="Unanswered keepalive probes after which the connection is closed and reopened.",
    ),
]
