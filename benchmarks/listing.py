"""Listing libvirt domains: ``listAllDomains`` against the legacy calls, and a full resync.

Usage: ``python benchmarks/listing.py [--guests 1000 5000] [--repeats 5]`` (or ``tox -e bench``).

A benchmark, not a test: it defines guests named ``lbench-<runid>-NNNNN`` on
libvirtd's test driver (``test+unix:///default``), each with nova's metadata,
and starts every other one, so running and inactive guests both exist. For
each count of guests (ascending; the next count adds guests to the previous
ones) it prints the median of ``--repeats`` runs of:

1. **Listing** every domain (``include_inactive`` and ``include_foreign``)
   with :class:`DomainLister`: ``listAllDomains`` (one RPC) against the legacy
   calls (a lister with ``legacy = True``: ``numOfDomains``, ``listDomainsID``,
   ``lookupByID`` per running guest, ``numOfDefinedDomains``,
   ``listDefinedDomains``, ``lookupByName`` per inactive guest). Each lister
   lists once, untimed, before it is timed: ``list_instance_domains`` asks
   every domain's origin even when the filter admits every origin, and a
   fresh lister reads each domain's XML for it. That first listing is
   measured on its own row.
2. **A full resync** as the service runs it: ``LibvirtBackend.list_instances``
   (the default ``[libvirt] report_*`` filter: inactive guests yes, foreign
   no, so origins matter; then one ``domainListGetStats``) and
   :meth:`PublishedStates.missed` against states already published for every
   guest (steady state: 0 changes). *Cold*: a fresh lister each run (one
   ``XMLDesc`` per guest). *Warm*: a lister that knows every origin.

RPC counts: one more run of each row (untimed) through
:class:`CountingConnection`, a proxy around the ``virConnect`` that counts
every call the lister and the backend make on it, and on the ``virDomain``
objects it hands out (``XMLDesc``, ``state``...). Every connection call is
counted as one RPC, but two for ``listDomainsID`` and ``listDefinedDomains``
(the binding asks the count first: :data:`SIZED_BY`); every domain call is
one RPC but those the client answers from its own ``virDomain`` struct
(:data:`LOCAL_DOMAIN_CALLS`), counted apart. Calls libvirt makes on its own
(keepalive) are not counted. These counts matched libvirt's own client log
(``RPC_CLIENT_MSG_TX_QUEUE`` lines) for every row when this was written.
Timed runs use the bare connection: a proxy per domain would add its own cost
to the one-RPC path.

The daemon's test driver is shared by every process on the machine: other
processes' domains are listed too, and counted in the report.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import os
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

import libvirt
from harness import progress
from libvirt_guests import (
    Calls,
    CountingConnection,
    LibvirtErrors,
    by_call,
    define_guests,
    machine,
    remove_guests,
    sigterm_as_exit,
)
from oslo_config import cfg

from hypervisor_notifier.backends.libvirt.backend import LibvirtBackend
from hypervisor_notifier.backends.libvirt.listing import DomainLister, ListFilter
from hypervisor_notifier.conf import register_opts
from hypervisor_notifier.events import LifecycleEvent, utcnow
from hypervisor_notifier.notifier.resync import PublishedStates

LIBVIRT_URI = "test+unix:///default"
DEFAULT_GUESTS = (1000, 5000)
DEFAULT_REPEATS = 5
#: Admits every origin: nothing to read (list_instance_domains still asks each origin).
EVERYTHING = ListFilter(include_inactive=True, include_foreign=True)

GOAL_SPEEDUP = 20.0
GOAL_SPEEDUP_GUESTS = 1000
GOAL_RESYNC_MS = 100.0
GOAL_RESYNC_GUESTS = 5000
ANCHOR = "anchor: legacy 107 ms vs 4.5 ms at 1,001"


# -- measuring ------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Row:
    """One measured row: the milliseconds of each run, and the calls of one more run."""

    times: list[float]
    calls: Calls

    @property
    def ms(self) -> float:
        """The median."""
        return statistics.median(self.times)

    @property
    def spread(self) -> str:
        return f"{min(self.times):.1f}-{max(self.times):.1f}"


def timed(call: Callable[[], Any], repeats: int) -> tuple[list[float], list[Any]]:
    """The milliseconds of each of ``repeats`` calls, and what each call returned.

    What a call returns is freed after the run, untimed: a listing's caller
    holds its domains. (A resync frees them inside ``list_instances``: timed.)
    """
    times, results = [], []
    for _ in range(repeats):
        started = time.perf_counter()
        results.append(call())
        times.append((time.perf_counter() - started) * 1000)
    return times, results


def new_lister(conn: Any, *, legacy: bool = False) -> DomainLister:
    lister = DomainLister(conn)
    lister.legacy = legacy
    return lister


def counted_twice(
    conn: libvirt.virConnect, run: Callable[[DomainLister], Any], *, legacy: bool = False
) -> tuple[Calls, Calls]:
    """The calls of ``run`` on a fresh counting lister, then of ``run`` again on it."""
    calls = Calls()
    lister = new_lister(CountingConnection(conn, calls), legacy=legacy)
    run(lister)
    first = calls.take()
    run(lister)
    return first, calls.take()


def list_everything(lister: DomainLister) -> list[Any]:
    return lister.list_instance_domains(EVERYTHING)


@dataclasses.dataclass
class Figures:
    """What one count of guests measured."""

    guests: int
    running: int
    listed: int
    list_all: Row
    legacy: Row
    first: Row
    same_domains: bool
    nova_listed: int
    cold: Row
    warm: Row
    changes: int
    split: dict[str, float]


class Resync:
    """The service's resync on a backend that is never connected: the lister is ours."""

    def __init__(self) -> None:
        conf = cfg.ConfigOpts()
        register_opts(conf)
        conf([], default_config_files=[], default_config_dirs=[])
        conf.set_override("connection_uri", LIBVIRT_URI, group="libvirt")
        self.backend = LibvirtBackend(conf)
        self.published = PublishedStates()

    def __call__(self, lister: DomainLister) -> int:
        """List, read states, diff; return the number of changes."""
        # The backend's lister is set when it connects: set ours instead.
        self.backend._lister = lister
        return len(self.published.missed(self.backend.list_instances(), utcnow()))

    def publish_all(self, lister: DomainLister) -> int:
        """Publish the state of every listed guest, as the service would: steady state."""
        self.backend._lister = lister
        missed = self.published.missed(self.backend.list_instances(), utcnow())
        for seq, observation in enumerate(missed):
            event = LifecycleEvent.from_observation(
                observation, host="bench", hypervisor="libvirt", seq=seq, resync=True
            )
            self.published.record(event)
        return len(self.published)


def measure(conn: libvirt.virConnect, guests: int, repeats: int) -> Figures:
    progress(f"measuring {guests:,} guests: listing")
    rows = {}
    domains = {}
    for legacy in (False, True):
        lister = new_lister(conn, legacy=legacy)
        # Untimed: fills the lister's origin cache (see the module docstring).
        domains[legacy] = {dom.UUIDString() for dom in list_everything(lister)}
        times, _ = timed(functools.partial(list_everything, lister), repeats)
        rows[legacy] = Row(times, counted_twice(conn, list_everything, legacy=legacy)[1])
    first_times, _ = timed(lambda: list_everything(new_lister(conn)), repeats)
    first = Row(first_times, counted_twice(conn, list_everything)[0])

    progress(f"measuring {guests:,} guests: resync")
    resync = Resync()
    warm_lister = new_lister(conn)
    nova_listed = resync.publish_all(warm_lister)
    cold_times, _ = timed(lambda: resync(new_lister(conn)), repeats)
    warm_times, changes = timed(functools.partial(resync, warm_lister), repeats)
    cold_calls, warm_calls = counted_twice(conn, resync)
    return Figures(
        guests=guests,
        running=len(range(0, guests, 2)),
        listed=len(domains[False]),
        list_all=rows[False],
        legacy=rows[True],
        first=first,
        same_domains=domains[False] == domains[True],
        nova_listed=nova_listed,
        cold=Row(cold_times, cold_calls),
        warm=Row(warm_times, warm_calls),
        changes=max(changes),
        split=warm_split(resync, warm_lister, repeats),
    )


def warm_split(resync: Resync, lister: DomainLister, repeats: int) -> dict[str, float]:
    """Medians of the warm resync's parts, each timed on its own."""
    domains = lister.list_instance_domains(resync.backend.listing)
    listing = resync.backend.list_instances()
    parts = {
        "list": functools.partial(lister.list_instance_domains, resync.backend.listing),
        "states": functools.partial(lister.states, domains),
        "diff": functools.partial(resync.published.missed, listing, utcnow()),
    }
    return {name: statistics.median(timed(part, repeats)[0]) for name, part in parts.items()}


# -- report ---------------------------------------------------------------------


def report(figures: Figures, repeats: int) -> list[str]:
    others = figures.listed - figures.guests
    title = (
        f"listing {figures.guests:,} guests ({figures.running:,} running)"
        f" + {others} other domain{'s' * (others != 1)}, median of {repeats} runs"
    )
    speedup = figures.legacy.ms / figures.list_all.ms
    at_goal = figures.guests == GOAL_SPEEDUP_GUESTS
    speed_goal = f"goal >= {GOAL_SPEEDUP:g}x at {GOAL_SPEEDUP_GUESTS:,}"
    speed_goal += f": {yes(speedup >= GOAL_SPEEDUP)}" if at_goal else ""
    resync_goal = f"goal < {GOAL_RESYNC_MS:g} ms at {GOAL_RESYNC_GUESTS:,}"
    if figures.guests == GOAL_RESYNC_GUESTS:
        resync_goal += f": {yes(figures.warm.ms < GOAL_RESYNC_MS)}"
    split = figures.split
    rest = figures.warm.ms - sum(split.values())
    lines = [
        f"{title:<60}{'ms':>8}{'RPCs':>8}",
        row("listAllDomains", figures.list_all),
        row("legacy calls", figures.legacy),
        f"  {'speedup':<58}{speedup:8.1f} x   ({speed_goal}; {ANCHOR})",
        row("first listing of a fresh lister (listAllDomains)", figures.first)
        + "   (include_foreign=True: no XML read)",
        f"full resync (list + states + diff), {figures.nova_listed:,} nova guests listed",
        row("cold (origins read once per guest)", figures.cold),
        row(f"warm (steady state, {figures.changes} changes)", figures.warm)
        + f"   ({resync_goal})",
        "  spread (min-max ms): "
        + ", ".join(
            f"{label} {measured.spread}"
            for label, measured in (
                ("listAllDomains", figures.list_all),
                ("legacy", figures.legacy),
                ("first listing", figures.first),
                ("cold", figures.cold),
                ("warm", figures.warm),
            )
        ),
        f"  warm, parts timed on their own (ms): list {split['list']:.1f}, states"
        f" {split['states']:.1f}, diff {split['diff']:.1f}; warm - parts = {rest:.1f}"
        " (InstanceState build, freeing the virDomain objects; noisy)",
        "  RPCs by call (a domain that appeared meanwhile adds its XMLDesc):",
        *(
            f"    {label}: {by_call(measured.calls.rpcs)}"
            for label, measured in (
                ("listAllDomains", figures.list_all),
                ("legacy calls", figures.legacy),
                ("first listing", figures.first),
                ("cold resync", figures.cold),
                ("warm resync", figures.warm),
            )
        ),
        f"  local virDomain calls (no RPC), warm resync: {by_call(figures.warm.calls.local)}",
    ]
    if not figures.same_domains:
        lines.append("  WARNING: the two listings differ (another process changed domains?)")
    return lines


def row(label: str, measured: Row) -> str:
    return f"  {label:<58}{measured.ms:8.1f}{measured.calls.total:8d}"


def yes(ok: bool) -> str:
    return "yes" if ok else "NO"


# -- the run --------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--guests",
        type=int,
        nargs="+",
        default=list(DEFAULT_GUESTS),
        help="guest counts to measure (default 1000 5000)",
    )
    parser.add_argument(
        "--repeats", type=int, default=DEFAULT_REPEATS, help="runs per median (default 5)"
    )
    args = parser.parse_args(argv)
    if min(args.guests) < 1 or args.repeats < 1:
        parser.error("--guests and --repeats must be at least 1")
    args.guests = sorted(set(args.guests))
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    prefix = f"lbench-{uuid.uuid4().hex[:8]}-"
    errors = LibvirtErrors()
    libvirt.registerErrorHandler(errors, None)
    conn = libvirt.open(LIBVIRT_URI)
    lines = machine(conn)
    try:
        with sigterm_as_exit():
            try:
                defined = 0
                for guests in args.guests:
                    lines.append(define_guests(conn, prefix, defined, guests))
                    progress(lines[-1])
                    defined = guests
                    lines += report(measure(conn, guests, args.repeats), args.repeats)
            finally:
                progress(f"removing {prefix}* guests")
                lines.append(remove_guests(conn, prefix))
    finally:
        conn.close()
    load = " ".join(f"{value:.2f}" for value in os.getloadavg())
    lines.append(f"whole run: {time.perf_counter() - started:.1f} s; load average at end {load}")
    if errors.count:
        lines.append(
            f"libvirt errors while measuring: {errors.count} (other processes' domains vanished"
            f" mid-listing?), last: {errors.last}"
        )
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
