"""``hypervisor-notifier-status upgrade check``: is this host ready for the installed version.

The nova-status convention, through oslo.upgradecheck: a table (or
``--json``), and the exit status 0 (all passed), 1 (a warning: it runs,
look at it), 2 (a failure: the service will not start or not do its job),
255 (the check itself failed). Unlike the live ``check`` it reaches no
hypervisor and no broker: it reads the configuration, the installed
packages and the outbox file, so it runs before the service is restarted
on the new code.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

from oslo_config import cfg
from oslo_upgradecheck import upgradecheck
from oslo_upgradecheck.upgradecheck import Code, Result

from hypervisor_notifier import conf as config
from hypervisor_notifier.backends import MissingBinding, UnknownBackend, backend_class
from hypervisor_notifier.conf import signing as signing_conf
from hypervisor_notifier.notifier import outbox_schema
from hypervisor_notifier.signing import Signer

PROJECT = "hypervisor-notifier"


#: A check that reads the configuration: given it once it loaded.
ConfiguredCheck = Callable[["UpgradeChecks", cfg.ConfigOpts], Result]


def _configured(check: ConfiguredCheck) -> Callable[[UpgradeChecks], Result]:
    """The check, run on the loaded configuration; a failure if it does not load."""

    @functools.wraps(check)
    def run(self: UpgradeChecks) -> Result:
        conf = self._config()
        if conf is None:
            return Result(Code.FAILURE, "needs a configuration that loads")
        return check(self, conf)

    return run


def check_outbox_file(
    path: str, inspect: Callable[[str], outbox_schema.OutboxFile] = outbox_schema.inspect
) -> Result:
    """The outbox file at ``path``, as ``outbox_schema.inspect`` finds it.

    Arguments:
        path: ``[outbox] path``.
        inspect: Tells what the file is (a test passes its own).

    """
    found = inspect(path)
    kind = str(getattr(found.kind, "value", found.kind)).lower()
    description = f"[outbox] path {path}: {found.description}"
    if kind in ("missing", "ours"):
        return Result(Code.SUCCESS, description)
    if kind == "damaged":
        # The service keeps a damaged file aside and starts with a new one.
        return Result(Code.WARNING, description)
    return Result(Code.FAILURE, description)


class UpgradeChecks(upgradecheck.UpgradeCommands):
    """The checks, run against the configuration files of the command line.

    Arguments:
        config_args: The oslo.config arguments (``--config-file``, ``--config-dir``).

    """

    display_title = "hypervisor-notifier upgrade check"

    def __init__(self, config_args: Sequence[str] = ()) -> None:
        self.config_args = list(config_args)
        self._conf: cfg.ConfigOpts | None = None
        self._error: str | None = None

    def _config(self) -> cfg.ConfigOpts | None:
        """The configuration, loaded once (None if it does not load: the first check says why)."""
        if self._conf is None and self._error is None:
            try:
                self._conf = config.load(self.config_args, prog=f"{PROJECT}-status")
            except config.ConfigError as exc:
                self._error = str(exc)
        return self._conf

    def _configuration(self) -> Result:
        conf = self._config()
        if conf is None:
            return Result(Code.FAILURE, self._error)
        files = ", ".join(conf.config_file) or "no config file: defaults"
        return Result(Code.SUCCESS, f"{files} loaded")

    @_configured
    def _backend(self, conf: cfg.ConfigOpts) -> Result:
        try:
            backend_class(conf.backend)
        except (UnknownBackend, MissingBinding) as exc:
            return Result(Code.FAILURE, str(exc))
        return Result(Code.SUCCESS, f"backend {conf.backend!r} and its binding are installed")

    @_configured
    def _signing(self, conf: cfg.ConfigOpts) -> Result:
        try:
            signer = Signer.from_conf(conf[signing_conf.GROUP])
        except ValueError as exc:
            return Result(Code.FAILURE, f"[{signing_conf.GROUP}] {exc}")
        if signer is None:
            return Result(
                Code.WARNING,
                f"[{signing_conf.GROUP}] key is not set: events are not signed, and "
                "consumers cannot tell them from forged ones",
            )
        return Result(Code.SUCCESS, f"events signed with key id {signer.key_id!r}")

    @_configured
    def _outbox(self, conf: cfg.ConfigOpts) -> Result:
        return check_outbox_file(conf.outbox.path)

    _upgrade_checks = (
        ("Configuration", _configuration),
        ("Backend binding", _backend),
        ("Signing key", _signing),
        ("Outbox file", _outbox),
    )


def _as_list(value: str | list[str] | None) -> list[str]:
    if not value:
        return []
    return [value] if isinstance(value, str) else list(value)


#: oslo.config's options taking a value, accepted before or after ``upgrade check``.
_VALUED = ("--config-file", "--config-dir")


def _split(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """``argv`` as (config options with their values, the rest)."""
    options: list[str] = []
    rest: list[str] = []
    args = iter(argv)
    for arg in args:
        if arg in _VALUED:
            options += [arg, next(args, "")]
        elif arg.split("=", 1)[0] in _VALUED:
            options.append(arg)
        else:
            rest.append(arg)
    return options, rest


def is_upgrade_command(argv: Sequence[str]) -> bool:
    """Whether ``argv``'s sub-command is ``upgrade`` (config options may come first)."""
    return _split(argv)[1][:1] == ["upgrade"]


def main(argv: Sequence[str]) -> int:
    """Run ``upgrade check [--json] [--config-file FILE]...``; return its exit status."""
    conf = cfg.ConfigOpts()
    checks = UpgradeChecks()
    try:
        # Only the command line here: each check loads the files itself, so a
        # file that does not load is a failed check, not a traceback.
        upgradecheck.register_cli_options(conf, checks)
        options, rest = _split(argv)
        # oslo.config wants its options before the sub-command; accept them anywhere.
        conf(options + rest, project=PROJECT, prog=f"{PROJECT}-status")
    except cfg.Error as exc:
        print(f"{PROJECT}-status: error: {exc}")
        return Code.FAILURE
    checks.config_args = [
        *(arg for path in conf.config_file for arg in ("--config-file", path)),
        *(arg for path in _as_list(conf.config_dir) for arg in ("--config-dir", path)),
    ]
    upgradecheck.CONF = conf
    return upgradecheck.run(conf)
