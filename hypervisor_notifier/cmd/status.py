"""``hypervisor-notifier-status check|upgrade check``: preflight of a host's configuration.

``upgrade check [--json] [--config-file FILE]`` is the offline check of the
nova-status convention (see :mod:`hypervisor_notifier.notifier.upgradecheck`).
``check`` is the live one:

Validates the configuration, loads the backend, connects to the hypervisor
(read-only) and lists its guests, logs in to each broker and asks whether
the exchange and the host's queue exist, and checks that the outbox can be
written. It declares, publishes and writes nothing. It prints one row per
check and exits like ``nova-status upgrade check``:

- 0: every check passed (or was skipped);
- 1: at least one warning: the service runs, but look at it;
- 2: at least one failure: the service cannot do its job with this
  configuration (also for a wrong command line).

Passwords never appear in the output.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from hypervisor_notifier import conf as config
from hypervisor_notifier import logs, version
from hypervisor_notifier.notifier import preflight, upgradecheck

PROG = "hypervisor-notifier-status"
HEADER = ("Check", "Result", "Detail")


def format_table(checks: Sequence[preflight.Check]) -> str:
    """The checks as a text table, one row per check, columns aligned."""
    rows = [HEADER, *((c.name, c.result.value, c.detail) for c in checks)]
    widths = [max(len(row[column]) for row in rows) for column in range(2)]

    def line(row: Sequence[str]) -> str:
        return f"{row[0]:<{widths[0]}} | {row[1]:<{widths[1]}} | {row[2]}".rstrip()

    rule = f"{'-' * widths[0]}-+-{'-' * widths[1]}-+-{'-' * 6}"
    return "\n".join([line(rows[0]), rule, *(line(row) for row in rows[1:])])


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``hypervisor-notifier-status``."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Preflight checks of a hypervisor-notifier configuration.",
        epilog="Exit status: 0 all checks passed, 1 a warning, 2 a failure.",
    )
    parser.add_argument("--version", action="version", version=version())
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser(
        "upgrade",
        help="'upgrade check [--json] [--config-file FILE]': offline readiness checks "
        "(configuration, backend binding, signing key, outbox file), as nova-status; "
        "exit 0/1/2, 255 if a check broke",
    )
    check = commands.add_parser(
        "check", help="check the configuration, the hypervisor and the broker"
    )
    check.add_argument(
        "--config-file", action="append", default=[], help="the service's config file"
    )
    check.add_argument("--config-dir", action="append", default=[], help="a config directory")
    check.add_argument(
        "--timeout",
        type=float,
        default=15.0,
        help="seconds allowed to reach the hypervisor and each broker (default 15)",
    )
    check.add_argument(
        "--debug", action="store_true", help="also log what the checks do, on standard error"
    )
    return parser


#: A diagnostic run at a terminal: its logs go to standard error, never to the
#: service's own log destinations.
_TERMINAL_ONLY = (
    ("log_file", None),
    ("log_dir", None),
    ("log_config_append", None),
    ("use_journal", False),
    ("use_syslog", False),
    ("use_stderr", True),
)


def _setup_logging(config_args: Sequence[str], *, debug: bool) -> None:
    """oslo.log from the configuration (format, levels), to standard error only."""
    try:
        conf = config.load(config_args, prog=PROG)
    except config.ConfigError:  # the table reports it; log plainly meanwhile
        logs.setup_stderr(debug=debug)
        return
    for name, value in (*_TERMINAL_ONLY, ("debug", debug)):
        conf.set_override(name, value)
    logs.setup(conf, PROG)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``hypervisor-notifier-status``; return its exit status."""
    argv = sys.argv[1:] if argv is None else argv
    if upgradecheck.is_upgrade_command(argv):
        logs.setup_stderr(debug=False)
        logging.getLogger().setLevel(logging.CRITICAL)
        return upgradecheck.main(argv)
    args = build_parser().parse_args(argv)
    config_args = [
        *(arg for path in args.config_file for arg in ("--config-file", path)),
        *(arg for path in args.config_dir for arg in ("--config-dir", path)),
    ]
    _setup_logging(config_args, debug=args.debug)
    if not args.debug:
        # The table says what failed; the backend's retry warnings would repeat it.
        logging.getLogger().setLevel(logging.CRITICAL)
    checks = preflight.run(config_args, prog=PROG, timeout=args.timeout)
    print(format_table(checks), flush=True)
    return preflight.exit_status(checks)


if __name__ == "__main__":
    sys.exit(main())
