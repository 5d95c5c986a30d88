"""The ``oslo.config.opts`` entry point: every option of the service."""

from __future__ import annotations

from oslo_config import cfg

from hypervisor_notifier.conf import default, esx, health, libvirt, outbox, publisher, sync

_MODULES = (default, libvirt, esx, publisher, outbox, sync, health)


def list_opts() -> list[tuple[str | None, list[cfg.Opt]]]:
    """Return ``(group, options)`` pairs for oslo-config-generator."""
    return [pair for module in _MODULES for pair in module.list_opts()]


def register_opts(conf: cfg.ConfigOpts) -> None:
    """Register every option of the service on ``conf``."""
    for module in _MODULES:
        module.register_opts(conf)
