"""Options of the ``[sync]`` group."""

from __future__ import annotations

from oslo_config import cfg

GROUP = "sync"

opts = [
    cfg.IntOpt(
        "interval",
        default=600,
        min=0,
        help="Seconds between full resyncs: every guest's state is listed (two "
        "libvirt calls) and compared with what was last published; only the "
        "differences are published. 0 disables the periodic resync; one still "
        "runs at start and after every reconnection to the hypervisor.",
    ),
]
