"""oslo.config options, one module per group.

:func:`load` is the one way the console scripts build their configuration.
Every problem it finds is one line naming the file, the section and the
option (:class:`ConfigError`); :func:`where` lets later checks say the same.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from oslo_config import cfg

from hypervisor_notifier.conf import sources
from hypervisor_notifier.conf.opts import list_opts, register_opts
from hypervisor_notifier.conf.sources import where

__all__ = ["ConfigError", "list_opts", "load", "register_opts", "where"]


class ConfigError(Exception):
    """The configuration is unusable: one line per problem, naming the option and why.

    Arguments:
        problems: One line each (file, section, option, what is wrong); never a secret.

    """

    def __init__(self, *problems: str) -> None:
        super().__init__("\n".join(problems))
        self.problems = list(problems)


def load(
    argv: Sequence[str],
    *,
    prog: str,
    description: str | None = None,
    version: str | None = None,
    register: Callable[[cfg.ConfigOpts], None] = register_opts,
    options: Callable[[], list[tuple[str | None, list[cfg.Opt]]]] = list_opts,
) -> cfg.ConfigOpts:
    """Parse the command line and config files into a new ConfigOpts.

    Every option is read once here, so a wrong value is reported at start
    rather than when first used; so is every section and option of the
    files that nothing registered (a typo would leave a default in force).

    Arguments:
        argv: The command line (oslo.config's ``--config-file`` and friends).
        prog: The command's name, for ``--help``.
        description: For ``--help``.
        version: Answered by ``--version``.
        register: Registers the command's options (default: the service's).
        options: Lists the options whose values are checked (default: the service's).

    Raises:
        ConfigError: With every problem found, one line each.

    """
    conf = cfg.ConfigOpts()
    register(conf)
    argv = list(argv)
    try:
        conf(argv, project="hypervisor-notifier", prog=prog, description=description,
             version=version)  # fmt: skip
    except (cfg.Error, OSError, ValueError) as exc:
        raise ConfigError(_describe(exc, argv)) from None
    problems = sources.unknown(conf, sources.config_files(conf, argv))
    for group, opts in options():
        section = conf[group] if group else conf
        for opt in opts:
            try:
                getattr(section, opt.dest)
            except cfg.Error as exc:
                problems.append(_bad_value(conf, group, opt, exc))
    if problems:
        raise ConfigError(*problems)
    return conf


def _bad_value(conf: cfg.ConfigOpts, group: str | None, opt: cfg.Opt, exc: cfg.Error) -> str:
    """``FILE: [group] option: why``, without oslo.config's LocationInfo(...) and no secret."""
    reason = str(exc.__context__) if exc.__context__ is not None else str(exc)
    if opt.secret:
        reason = "not a valid value (it is secret: not shown)"
    return f"{where(conf, group, opt.dest)}: {reason}"


def _describe(exc: BaseException, argv: Sequence[str]) -> str:
    """One line for what stopped oslo.config from reading the files."""
    if isinstance(exc, cfg.ConfigFileParseError):
        # The line itself is not repeated: it may hold a password.
        context = exc.__context__
        if isinstance(context, cfg.ParseError):
            return f"{exc.config_file}: line {context.lineno}: {context.msg}"
        return f"{exc.config_file}: cannot be parsed"
    if isinstance(exc, cfg.ConfigFilesNotFoundError):
        return "; ".join(f"{path}: no such config file" for path in exc.config_files)
    if isinstance(exc, cfg.ConfigFilesPermissionDeniedError):
        return "; ".join(f"{path}: permission denied" for path in exc.config_files)
    if isinstance(exc, cfg.ConfigDirNotFoundError):
        return f"{exc.config_dir}: no such config directory"
    if isinstance(exc, (OSError, UnicodeDecodeError)):
        files = [argv[i + 1] for i, arg in enumerate(argv[:-1]) if arg == "--config-file"]
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        return f"{_unreadable(files) or 'a config file'}: {reason}"
    # Anything else oslo.config says, without the repr of its LocationInfo.
    return re.sub(r" from LocationInfo\(.*?\)(?= is not valid)", "", str(exc).strip())


def _unreadable(files: Sequence[str]) -> str | None:
    """The first of ``files`` that is not a readable UTF-8 text file."""
    for path in files:
        try:
            with open(path, encoding="utf-8") as config_file:
                config_file.read()
        except (OSError, ValueError):
            return path
    return None
