"""``hypervisor-events history`` and ``watch --since``: replay the history stream."""

from __future__ import annotations

import argparse
import sys
import threading
from collections.abc import Callable

from oslo_config import cfg

from hypervisor_notifier.cmd import print_error
from hypervisor_notifier.conf import publisher as publisher_conf
from hypervisor_notifier.consumer.history import HistoryReader, parse_since
from hypervisor_notifier.signing import Verifier
from hypervisor_notifier.tls import BrokerAccess, TLSSettings
from hypervisor_notifier.transport_url import TransportURL, describe_error
from hypervisor_notifier.wire import WireEvent


def add_history_arguments(parser: argparse.ArgumentParser, *, required_since: bool) -> None:
    """The options a replay needs (``history``'s, and ``watch``'s ``--since``)."""
    parser.add_argument(
        "--since",
        required=required_since,
        help="replay from the history stream from this moment: 10m, 2h, 7d ago, or an "
        "ISO 8601 time ([publisher] history_stream must be set)",
    )
    parser.add_argument(
        "--stream", help="the history stream (overrides [publisher] history_stream)"
    )


def replay(
    args: argparse.Namespace,
    conf: cfg.ConfigOpts,
    url: str,
    tls: TLSSettings,
    verifier: Verifier | None,
    show: Callable[[WireEvent], None],
    *,
    follow: bool,
    done: threading.Event,
    prog: str,
) -> int:
    """Show the stream's matching events since ``args.since`` (from ``url``'s broker).

    Returns 2 for bad input, 1 if the stream cannot be read, else 0.
    """
    opts = conf[publisher_conf.GROUP]
    stream = args.stream or opts.history_stream
    if not stream:
        return print_error(prog, ValueError("no history stream: set [publisher] "
                                            "history_stream or --stream"))  # fmt: skip
    try:
        since = parse_since(args.since)
    except ValueError as exc:
        return print_error(prog, exc)
    try:
        access = BrokerAccess(TransportURL.parse(url), tls)
    except ValueError as exc:
        return print_error(prog, exc)
    reader = HistoryReader(access, stream, verifier=verifier)

    def matches(event: WireEvent) -> bool:
        # Which instance, transition and kind: ``show`` chooses (it is the watch's printer).
        return not args.host or event.host == args.host

    try:
        stats = reader.replay(since, show, matches=matches, follow=follow, stop=done.is_set)
    except Exception as exc:  # the broker or the stream is not there: say so, no traceback
        print(f"{prog}: error: cannot read stream {stream!r}: {describe_error(exc)}",
              file=sys.stderr)  # fmt: skip
        return 1
    if stats.refused:
        print(f"{prog}: {stats.refused} messages of the stream were refused (malformed or "
              "not signed by an accepted key)", file=sys.stderr)  # fmt: skip
    return 0
