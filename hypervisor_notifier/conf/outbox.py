"""Options of the ``[outbox]`` group."""

from __future__ import annotations

from oslo_config import cfg

GROUP = "outbox"

#: The default bound: about 100 MB of events, hours of a busy host's events.
MAX_EVENTS = 100_000

opts = [
    cfg.StrOpt(
        "path",
        default="/var/lib/hypervisor-notifier/outbox.sqlite",
        help="SQLite database where events wait until the broker confirmed them, "
        "so a crash of the service loses none; created at the first start, with "
        "its directory. Only an outbox this service created is opened: a "
        "directory, another file or an outbox of a newer release stops the start "
        "(exit status 2) and is left untouched. If it cannot be written (disk "
        "full, read-only), the service keeps publishing from memory and says so "
        "in /healthz and the metrics.",
    ),
    cfg.IntOpt(
        "max_events",
        default=MAX_EVENTS,
        min=1,
        help="Events the outbox holds at most. When full, the oldest event of an "
        "instance that has a later one waiting is dropped (counted as coalesced): "
        "the latest state of every instance is never dropped.",
    ),
    cfg.StrOpt(
        "synchronous",
        default="normal",
        choices=[
            ("normal", "survives a crash of the service, not a power cut of the host"),
            ("full", "survives both; about ten times the cost per event"),
        ],
        help="SQLite's synchronous mode for the outbox (WAL journal).",
    ),
]
