"""oslo.config options, one module per group.

:func:`load` is the one way the console scripts build their configuration.
"""

from __future__ import annotations

from collections.abc import Sequence

from oslo_config import cfg

from hypervisor_notifier.conf.opts import list_opts, register_opts

__all__ = ["ConfigError", "list_opts", "load", "register_opts"]


class ConfigError(Exception):
    """The configuration is unusable; the text says which option and why."""


def load(argv: Sequence[str], *, prog: str, description: str | None = None) -> cfg.ConfigOpts:
    """Parse the command line and config files into a new ConfigOpts.

    Every option is read once here, so a wrong value is reported at start
    (as :class:`ConfigError`) rather than when first used.
    """
    conf = cfg.ConfigOpts()
    register_opts(conf)
    try:
        conf(list(argv), project="hypervisor-notifier", prog=prog, description=description)
        for group, opts in list_opts():
            section = conf[group] if group else conf
            for opt in opts:
                getattr(section, opt.dest)
    except cfg.Error as exc:
        raise ConfigError(str(exc).strip()) from None
    return conf
