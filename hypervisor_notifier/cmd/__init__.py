"""Console scripts: each parses its configuration and starts one thing."""

from __future__ import annotations

import sys


def print_error(prog: str, exc: BaseException) -> int:
    """Print ``exc`` on standard error, one ``PROG: error: ...`` line per problem; return 2.

    Arguments:
        prog: The command's name.
        exc: A :class:`~hypervisor_notifier.conf.ConfigError` (one line per
            problem) or any error whose text is safe to show.

    """
    lines = getattr(exc, "problems", None) or str(exc).splitlines() or [type(exc).__name__]
    for line in lines:
        print(f"{prog}: error: {line}", file=sys.stderr)
    return 2
