"""``hypervisor-events watch``: tail the bus, one line per event with its delivery latency.

The broker URL (its password) is best given in a file (``--transport-url-file``)
or the environment (``$HYPERVISOR_EVENTS_TRANSPORT_URL``), or the service's
config file: a command line is visible to every user of the host.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import subprocess
import sys
import threading
import time
from collections.abc import Collection, Mapping, Sequence
from typing import TextIO

from hypervisor_notifier import conf as config
from hypervisor_notifier import events, logs, version
from hypervisor_notifier.cmd import history, print_error
from hypervisor_notifier.cmd.event_lines import format_json, format_line
from hypervisor_notifier.cmd.stopping import stop_signals_to_main_thread
from hypervisor_notifier.conf import publisher as publisher_conf
from hypervisor_notifier.conf import signing as signing_conf
from hypervisor_notifier.consumer import Subscriber
from hypervisor_notifier.consumer.history import parse_since
from hypervisor_notifier.events import utcnow
from hypervisor_notifier.faults import FaultEvent
from hypervisor_notifier.host_events import HostEvent
from hypervisor_notifier.notifier import broker, retired_hosts
from hypervisor_notifier.signing import Verifier
from hypervisor_notifier.transport_url import mask_secrets
from hypervisor_notifier.wire import WireEvent

__all__ = ["Watch", "format_json", "format_line", "main", "use_colour"]

PROG = "hypervisor-events"
#: What ``--kind`` chooses from: guest state changes, guest faults, the hypervisor connection.
KINDS = {"lifecycle": events.LifecycleEvent, "fault": FaultEvent, "host": HostEvent}
#: The environment variable holding the broker URL (kept off the command line).
URL_ENVIRONMENT = "HYPERVISOR_EVENTS_TRANSPORT_URL"


def use_colour(choice: str, stream: TextIO, environ: Mapping[str, str]) -> bool:
    """Whether to colour: ``always``, ``never``, or ``auto`` (a terminal, and no ``$NO_COLOR``)."""
    if choice != "auto":
        return choice == "always"
    return stream.isatty() and not environ.get("NO_COLOR")


def transport_url_from(
    args: argparse.Namespace, environ: Mapping[str, str], configured: str | None
) -> str | None:
    """The broker URL: ``--transport-url-file``, ``--transport-url``, the environment, the config.

    Raises:
        ValueError: The file cannot be read or is empty (the text names it).

    """
    if args.transport_url_file:
        try:
            with open(args.transport_url_file, encoding="utf-8") as url_file:
                url = url_file.read().strip()
        except OSError as exc:
            raise ValueError(
                f"--transport-url-file {args.transport_url_file!r}: {exc.strerror or exc}"
            ) from None
        if not url:
            raise ValueError(f"--transport-url-file {args.transport_url_file!r} is empty")
        return url
    if args.transport_url:
        if "@" in args.transport_url:  # user:password@ on the command line
            print(
                f"{PROG}: warning: a password on the command line is visible to every user "
                f"of this host; use --transport-url-file or ${URL_ENVIRONMENT}",
                file=sys.stderr,
            )
        return args.transport_url
    return environ.get(URL_ENVIRONMENT) or configured


class Watch:
    """Print each matching event as it arrives, of any kind; stop after ``count`` if given.

    Arguments:
        instance: Print only this instance's events (UUID or name): no host events.
        as_json: Print JSON lines instead of text.
        count: Stop after printing this many events.
        transitions: Print only lifecycle events of these transitions (None: every event).
        colour: Colour the text lines (never JSON).
        kinds: Print only these kinds of events (``KINDS``' names; None: all).

    """

    def __init__(
        self,
        *,
        instance: str | None,
        as_json: bool,
        count: int | None,
        transitions: Collection[events.Transition] | None = None,
        colour: bool = False,
        kinds: Collection[str] | None = None,
    ) -> None:
        self.instance = instance
        self.formatter = format_json if as_json else format_line
        self.remaining = count
        self.transitions = frozenset(transitions) if transitions else None
        self.colour = colour and not as_json
        self.kinds = tuple(KINDS[kind] for kind in kinds) if kinds else tuple(KINDS.values())
        self.done = threading.Event()

    def __call__(self, event: WireEvent) -> None:
        """Subscriber callback (for every kind): print one event."""
        if not self.wanted(event):
            return
        latency = (events.utcnow() - event.occurred_at).total_seconds() * 1000
        print(self.formatter(event, latency, self.colour), flush=True)
        if self.remaining is not None:
            self.remaining -= 1
            if self.remaining <= 0:
                self.done.set()

    def wanted(self, event: WireEvent) -> bool:
        """Whether the options choose ``event``."""
        if not isinstance(event, self.kinds):
            return False
        if self.instance and self.instance not in (
            getattr(event, "instance_uuid", None),
            getattr(event, "instance_name", None),
        ):
            return False
        return self.transitions is None or getattr(event, "transition", None) in self.transitions


def add_bus_arguments(parser: argparse.ArgumentParser) -> None:
    """What every subcommand reads: the bus, the signing key, which events to show."""
    parser.add_argument("--host", help="only this compute host's events (default: every host's)")
    parser.add_argument("--instance", help="only this instance's events (UUID or name)")
    parser.add_argument(
        "--transition",
        action="append",
        choices=[t.value for t in events.Transition],
        help="only lifecycle events of this transition (repeat for several)",
    )
    parser.add_argument(
        "--kind",
        action="append",
        choices=list(KINDS),
        help="only events of this kind: lifecycle (a guest's state), fault (a guest's "
        "fault), host (the hypervisor connection); repeat for several (default: all)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON lines")
    parser.add_argument(
        "--color",
        choices=["auto", "always", "never"],
        default="auto",
        help="colour the transitions: auto (default) only on a terminal, and not when "
        "$NO_COLOR is set",
    )
    parser.add_argument(
        "--config-file",
        action="append",
        default=[],
        help="the service's config file: [publisher] transport_url, exchange and topic",
    )
    url = parser.add_mutually_exclusive_group()
    url.add_argument(
        "--transport-url-file",
        help="file holding the broker URL (overrides the environment and the config file)",
    )
    url.add_argument(
        "--transport-url",
        help=f"broker URL; a password given here is visible in the process list: "
        f"prefer --transport-url-file or ${URL_ENVIRONMENT}",
    )
    parser.add_argument("--exchange", help="exchange (overrides the config file)")
    parser.add_argument("--topic", help="topic (overrides the config file)")
    parser.add_argument(
        "--key-file",
        help="file holding the signing key (overrides [signing] key): print only events "
        "signed with it (or [signing] previous_key); others are counted and dropped",
    )
    parser.add_argument("--key-id", help="the key's id (overrides [signing] key_id)")
    parser.add_argument("--ssl-ca-file", help="TLS CA file (overrides [publisher] ssl_ca_file)")


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``hypervisor-events``."""
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__)
    parser.add_argument("--version", action="version", version=version())
    commands = parser.add_subparsers(dest="command", required=True)
    watch = commands.add_parser("watch", help="print events as they arrive, of every kind")
    add_bus_arguments(watch)
    watch.add_argument("--count", type=int, help="exit after printing this many events")
    history.add_history_arguments(watch, required_since=False)
    past = commands.add_parser(
        "history", help="print the events of the history stream since a moment, then exit"
    )
    add_bus_arguments(past)
    history.add_history_arguments(past, required_since=True)
    idle = commands.add_parser(
        "idle-queues",
        help="list host queues nobody consumes (retired hosts): run on a RabbitMQ node",
    )
    idle.add_argument(
        "--older-than", default="1d", help="only queues whose oldest event waited this long"
    )
    idle.add_argument("--topic", default="hypervisor_events", help="the notifiers' topic")
    idle.add_argument("--vhost", default="/", help="the virtual host")
    idle.add_argument("--rabbitmqctl", default="rabbitmqctl", help="the rabbitmqctl to run")
    return parser


def idle_queues(args: argparse.Namespace) -> int:
    """Print the host queues without a consumer; 1 if rabbitmqctl failed."""
    try:
        older_than = (utcnow() - parse_since(args.older_than)).total_seconds()
    except ValueError as exc:
        return print_error(PROG, ValueError(str(exc).replace("--since", "--older-than")))
    try:
        rows = retired_hosts.list_queues(args.rabbitmqctl, args.vhost)
    except (OSError, ValueError, subprocess.SubprocessError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1
    found = retired_hosts.idle_host_queues(rows, args.topic, older_than=older_than,
                                           now=time.time())  # fmt: skip
    for queue in found:
        age = "unknown" if queue.oldest_age is None else f"{queue.oldest_age / 3600:.1f} h"
        print(f"{queue.name}\t{queue.queue_type}\t{queue.messages} messages\toldest {age}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``hypervisor-events``; return its exit status."""
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    if args.command == "idle-queues":
        return idle_queues(args)
    config_args = [arg for path in args.config_file for arg in ("--config-file", path)]
    try:
        conf = config.load(config_args, prog=PROG)
    except config.ConfigError as exc:
        return print_error(PROG, exc)
    try:
        logs.setup(conf, PROG)
    except ValueError as exc:
        return print_error(PROG, exc)
    opts = conf[publisher_conf.GROUP]
    if args.key_file:
        conf.set_override("key_file", args.key_file, signing_conf.GROUP)
        conf.set_override("key", None, signing_conf.GROUP)
    if args.key_id:
        conf.set_override("key_id", args.key_id, signing_conf.GROUP)
    watch = Watch(
        instance=args.instance,
        as_json=args.json,
        count=getattr(args, "count", None),
        transitions=[events.Transition(t) for t in args.transition or ()],
        colour=use_colour(args.color, sys.stdout, os.environ),
        kinds=args.kind,
    )
    try:
        verifier = Verifier.from_conf(conf[signing_conf.GROUP])
    except ValueError as exc:
        return print_error(PROG, ValueError(f"{config.where(conf, signing_conf.GROUP)} {exc}"))
    try:
        settings = broker.from_conf(conf)
        url = transport_url_from(args, os.environ, settings.transport_url)
        if not url:
            raise ValueError(
                f"no broker URL: use --transport-url-file, ${URL_ENVIRONMENT} or a "
                f"--config-file with [{publisher_conf.GROUP}] transport_url"
            )
    except (ValueError, config.ConfigError) as exc:
        return print_error(PROG, ValueError(mask_secrets(str(exc))))
    tls = settings.access.tls
    if args.ssl_ca_file:
        tls = dataclasses.replace(tls, ca_file=args.ssl_ca_file)
    if args.command == "history" or args.since:
        follow = args.command == "watch"
        with stop_signals_to_main_thread(watch.done.set):
            return history.replay(args, conf, url, tls, verifier, watch, follow=follow,
                                  done=watch.done, prog=PROG)  # fmt: skip
    try:
        subscriber = Subscriber(
            url,
            watch,
            on_fault=watch,
            on_host=watch,
            host=args.host,
            exchange=args.exchange or opts.exchange,
            topic=args.topic or opts.topic,
            exclusive=True,
            verifier=verifier,
            ssl_ca_file=tls.ca_file,
            ssl_cert_file=tls.cert_file,
            ssl_key_file=tls.key_file,
        )
    except ValueError as exc:
        return print_error(PROG, ValueError(mask_secrets(str(exc))))
    with stop_signals_to_main_thread(watch.done.set):
        subscriber.start()
    watch.done.wait()
    subscriber.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
