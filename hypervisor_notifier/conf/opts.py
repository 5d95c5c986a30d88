"""The ``oslo.config.opts`` entry point: every option of the service.

Each module of this package declares one group: its ``GROUP`` (None for
``[DEFAULT]``) and its ``opts``.
"""

from __future__ import annotations

from oslo_config import cfg

from hypervisor_notifier.conf import (
    default,
    esx,
    health,
    libvirt,
    outbox,
    publisher,
    signing,
    sync,
)

_MODULES = (default, libvirt, esx, publisher, signing, outbox, sync, health)


def list_opts() -> list[tuple[str | None, list[cfg.Opt]]]:
    """Return ``(group, options)`` pairs for oslo-config-generator."""
    return [(module.GROUP, module.opts) for module in _MODULES]


def register_opts(conf: cfg.ConfigOpts) -> None:
    """Register every option of the service on ``conf``."""
    for group, opts in list_opts():
        conf.register_opts(opts, group=group)
