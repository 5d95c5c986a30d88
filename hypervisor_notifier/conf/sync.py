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


def register_opts(conf: cfg.ConfigOpts) -> None:
    """Register the ``[sync]`` options on ``conf``."""
    conf.register_opts(opts, group=GROUP)


def list_opts() -> list[tuple[str | None, list[cfg.Opt]]]:
    """Options for oslo-config-generator."""
    return [(GROUP, opts)]
