"""``hypervisor-events watch``: tail the bus, one line per event with its delivery latency."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import threading
from collections.abc import Sequence

from hypervisor_notifier import conf as config
from hypervisor_notifier import events, logs
from hypervisor_notifier.cmd.stopping import stop_signals_to_main_thread
from hypervisor_notifier.conf import publisher as publisher_conf
from hypervisor_notifier.conf import signing as signing_conf
from hypervisor_notifier.consumer import Subscriber
from hypervisor_notifier.notifier import broker
from hypervisor_notifier.signing import Verifier
from hypervisor_notifier.transport_url import mask_secrets

PROG = "hypervisor-events"


def format_line(event: events.LifecycleEvent, latency_ms: float) -> str:
    """One human-readable line for ``event``."""
    flags = (" resync" if event.resync else "") + (" verified" if event.verified else "")
    return (
        f"{events.format_time(event.occurred_at)} {event.host} {event.transition.value:<19} "
        f"{event.instance_name} ({event.instance_uuid}) "
        f"power_state={event.power_state.name} reason={event.reason}/{event.detail} "
        f"seq={event.seq} latency={latency_ms:.1f}ms{flags}"
    )


def format_json(event: events.LifecycleEvent, latency_ms: float) -> str:
    """The event's wire payload as one JSON line, plus ``latency_ms`` and ``verified``."""
    return json.dumps(
        {**event.to_payload(), "latency_ms": round(latency_ms, 3), "verified": event.verified}
    )


class Watch:
    """Print each matching event as it arrives; stop after ``count`` if given.

    Arguments:
        instance: Print only this instance's events (UUID or name).
        as_json: Print JSON lines instead of text.
        count: Stop after printing this many events.

    """

    def __init__(self, *, instance: str | None, as_json: bool, count: int | None) -> None:
        self.instance = instance
        self.formatter = format_json if as_json else format_line
        self.remaining = count
        self.done = threading.Event()

    def __call__(self, event: events.LifecycleEvent) -> None:
        """Subscriber callback: print one event."""
        if self.instance and self.instance not in (event.instance_uuid, event.instance_name):
            return
        latency = (events.utcnow() - event.occurred_at).total_seconds() * 1000
        print(self.formatter(event, latency), flush=True)
        if self.remaining is not None:
            self.remaining -= 1
            if self.remaining <= 0:
                self.done.set()


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``hypervisor-events``."""
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    watch = commands.add_parser("watch", help="print lifecycle events as they arrive")
    watch.add_argument("--host", help="only this compute host's events (default: every host's)")
    watch.add_argument("--instance", help="only this instance's events (UUID or name)")
    watch.add_argument("--json", action="store_true", help="print JSON lines")
    watch.add_argument("--count", type=int, help="exit after printing this many events")
    watch.add_argument(
        "--config-file",
        action="append",
        default=[],
        help="the service's config file: [publisher] transport_url, exchange and topic",
    )
    watch.add_argument("--transport-url", help="broker URL (overrides the config file)")
    watch.add_argument("--exchange", help="exchange (overrides the config file)")
    watch.add_argument("--topic", help="topic (overrides the config file)")
    watch.add_argument(
        "--key-file",
        help="file holding the signing key (overrides [signing] key): print only events "
        "signed with it (or [signing] previous_key); others are counted and dropped",
    )
    watch.add_argument("--key-id", help="the key's id (overrides [signing] key_id)")
    watch.add_argument("--ssl-ca-file", help="TLS CA file (overrides [publisher] ssl_ca_file)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``hypervisor-events``; return its exit status."""
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    config_args = [arg for path in args.config_file for arg in ("--config-file", path)]
    try:
        conf = config.load(config_args, prog=PROG)
    except config.ConfigError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    try:
        logs.setup(conf, PROG)
    except ValueError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    opts = conf[publisher_conf.GROUP]
    if args.key_file:
        conf.set_override("key_file", args.key_file, signing_conf.GROUP)
        conf.set_override("key", None, signing_conf.GROUP)
    if args.key_id:
        conf.set_override("key_id", args.key_id, signing_conf.GROUP)
    watch = Watch(instance=args.instance, as_json=args.json, count=args.count)
    try:
        verifier = Verifier.from_conf(conf[signing_conf.GROUP])
    except ValueError as exc:
        print(f"{PROG}: error: [{signing_conf.GROUP}] {exc}", file=sys.stderr)
        return 2
    try:
        settings = broker.from_conf(conf)
        tls = settings.tls
        if args.ssl_ca_file:
            tls = dataclasses.replace(tls, ca_file=args.ssl_ca_file)
        subscriber = Subscriber(
            args.transport_url or settings.transport_url,
            watch,
            host=args.host,
            exchange=args.exchange or opts.exchange,
            topic=args.topic or opts.topic,
            exclusive=True,
            verifier=verifier,
            ssl_ca_file=tls.ca_file,
            ssl_cert_file=tls.cert_file,
            ssl_key_file=tls.key_file,
        )
    except (ValueError, config.ConfigError) as exc:
        print(f"{PROG}: error: {mask_secrets(str(exc))}", file=sys.stderr)
        return 2
    with stop_signals_to_main_thread(watch.done.set):
        subscriber.start()
    watch.done.wait()
    subscriber.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
