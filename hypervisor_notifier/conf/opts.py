"""The ``oslo.config.opts`` entry point: every option of the service.

Each module of this package declares one group: its ``GROUP`` (None for
``[DEFAULT]``) and its ``opts``; :mod:`.oslo_messaging` declares
oslo.messaging's groups, read as fallbacks. oslo.log's options are
listed and registered with them, with this service's defaults (:func:`set_defaults`, also the
``oslo.config.opts.defaults`` entry point).
"""

from __future__ import annotations

from oslo_config import cfg
from oslo_log import _options as oslo_log_options
from oslo_log import log

from hypervisor_notifier.conf import (
    default,
    esx,
    health,
    libvirt,
    oslo_messaging,
    outbox,
    publisher,
    signing,
    sync,
)

_MODULES = (default, libvirt, esx, publisher, signing, outbox, sync, health)

#: Libraries that log every frame or plugin at INFO/DEBUG: their failures reach
#: us as exceptions, which the service logs itself.
QUIET_LIBRARIES = ("amqp=WARN", "kombu=WARN", "stevedore=WARN", "pyVmomi=WARN")


def list_opts() -> list[tuple[str | None, list[cfg.Opt]]]:
    """Return ``(group, options)`` pairs for oslo-config-generator, oslo.log's included.

    oslo.log's are listed here (with this service's defaults) rather than
    through its own namespace, so :func:`hypervisor_notifier.conf.load`
    checks their values at start as it checks ours.
    """
    set_defaults()
    return [
        *((module.GROUP, module.opts) for module in _MODULES),
        *oslo_messaging.list_opts(),
        *oslo_log_options.list_opts(),
    ]


def set_defaults() -> None:
    """Set oslo.log's defaults for this service: the noisy libraries at WARN."""
    levels = [
        level
        for level in log.get_default_log_levels()
        if level.split("=")[0] not in {q.split("=")[0] for q in QUIET_LIBRARIES}
    ]
    log.set_defaults(default_log_levels=[*levels, *QUIET_LIBRARIES])


def register_opts(conf: cfg.ConfigOpts) -> None:
    """Register every option of the service, and oslo.log's, on ``conf``."""
    # oslo.log's first: its command-line options (--debug, --log-file...) are
    # command-line only if registered as such before anyone registers them plainly.
    set_defaults()
    log.register_options(conf)
    for group, opts in list_opts():
        conf.register_opts(opts, group=group)
