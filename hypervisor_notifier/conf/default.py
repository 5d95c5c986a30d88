"""Options of the ``[DEFAULT]`` group."""

from __future__ import annotations

import socket

from oslo_config import cfg

host_opt = cfg.StrOpt(
    "host",
    default=socket.gethostname(),
    sample_default="<current hostname>",
    regex=r"^[^\s*#]+$",
    help="Name of this compute host, as nova knows it (nova's [DEFAULT] host). "
    "It is part of the routing key <topic>.<host>.info and of every event, so a "
    "host's subscriber receives only its own events. No spaces, '*' or '#'.",
)

GROUP = None

opts = [
    host_opt,
    cfg.StrOpt(
        "backend",
        default="libvirt",
        help="Hypervisor backend to load: the name of an entry point in the "
        "'hypervisor_notifier.backends' namespace, e.g. libvirt. An unknown name "
        "stops the service at start with the list of installed backends.",
    ),
    cfg.FloatOpt(
        "shutdown_timeout",
        default=30.0,
        min=0,
        help="Seconds to wait, on SIGTERM, for the events already received to be "
        "confirmed by the broker before exiting.",
    ),
]
