"""Guests on libvirtd's test driver, and counting the RPCs a lister makes: for ``listing.py``.

Not a benchmark. :class:`CountingConnection` is a proxy around a
``virConnect`` that counts every call made on it and on the ``virDomain``
objects it hands out: every connection call is one RPC, but two for
``listDomainsID`` and ``listDefinedDomains`` (the binding asks the count
first: :data:`SIZED_BY`); every domain call is one RPC but those the client
answers from its own ``virDomain`` struct (:data:`LOCAL_DOMAIN_CALLS`),
counted apart.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import libvirt
from harness import machine_line

# Inactive when defined; every other one is started.
GUEST_XML = (
    "<domain type='test'><name>{name}</name><memory>8192</memory>"
    "<os><type>hvm</type></os><metadata>"
    "<nova:instance xmlns:nova='http://openstack.org/xmlns/libvirt/nova/1.1'/>"
    "</metadata></domain>"
)
#: Threads defining and removing guests, on one connection (libvirtd serves
#: several calls of a client at once).
SETUP_THREADS = 4

#: virDomain methods the client answers from its own struct: no RPC.
LOCAL_DOMAIN_CALLS = frozenset({"ID", "UUID", "UUIDString", "name", "connect"})
#: libvirt-python's binding of these asks the daemon for the count first: two RPCs.
SIZED_BY = {"listDomainsID": "numOfDomains", "listDefinedDomains": "numOfDefinedDomains"}


# -- counting RPCs ------------------------------------------------------------


class Calls:
    """The calls made through a :class:`CountingConnection`, by method."""

    def __init__(self) -> None:
        self.rpcs: Counter[str] = Counter()
        self.local: Counter[str] = Counter()

    @property
    def total(self) -> int:
        """The number of RPCs."""
        return sum(self.rpcs.values())

    def take(self) -> Calls:
        """A copy of the counts so far; then start again from zero."""
        taken = Calls()
        taken.rpcs, taken.local = self.rpcs.copy(), self.local.copy()
        self.rpcs.clear()
        self.local.clear()
        return taken

    def wrap(self, value: Any) -> Any:
        """Wrap the domains in a call's result (alone, in lists, in stats tuples)."""
        if isinstance(value, libvirt.virDomain):
            return CountingDomain(value, self)
        if isinstance(value, list):
            return [self.wrap(item) for item in value]
        if isinstance(value, tuple):
            return tuple(self.wrap(item) for item in value)
        return value


class _Counting:
    """Forward every method call to ``target``, counting it first."""

    def __init__(self, target: Any, calls: Calls) -> None:
        self._target = target
        self._calls = calls

    def _count(self, method: str) -> None:
        raise NotImplementedError

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._target, name)
        if not callable(attribute):
            return attribute

        def counted(*args: Any) -> Any:
            self._count(name)
            return self._calls.wrap(attribute(*[unwrap(arg) for arg in args]))

        return counted


class CountingConnection(_Counting):
    """A ``virConnect`` that counts each call as an RPC; it hands out counting domains."""

    def _count(self, method: str) -> None:
        self._calls.rpcs[method] += 1
        if method in SIZED_BY:
            self._calls.rpcs[f"{SIZED_BY[method]} (in {method})"] += 1


class CountingDomain(_Counting):
    """A ``virDomain`` that counts each call: an RPC, or local (:data:`LOCAL_DOMAIN_CALLS`)."""

    def _count(self, method: str) -> None:
        local = method in LOCAL_DOMAIN_CALLS
        (self._calls.local if local else self._calls.rpcs)[f"virDomain.{method}"] += 1


def unwrap(value: Any) -> Any:
    """The real objects behind counting domains, for libvirt (``domainListGetStats``)."""
    if isinstance(value, _Counting):
        return value._target
    if isinstance(value, list):
        return [unwrap(item) for item in value]
    return value


def by_call(counter: Counter[str]) -> str:
    return ", ".join(f"{name} {count}" for name, count in sorted(counter.items())) or "none"


# -- guests ---------------------------------------------------------------------


def in_threads(work: Callable[[int], None], items: int) -> None:
    """Run ``work(index)`` for ``range(items)`` in SETUP_THREADS threads; re-raise a failure."""
    with ThreadPoolExecutor(SETUP_THREADS) as pool:
        for _ in pool.map(work, range(items)):
            pass


def define_guests(conn: libvirt.virConnect, prefix: str, start: int, stop: int) -> str:
    """Define guests ``start`` to ``stop - 1``; start the even ones. Say how long it took."""
    started = time.perf_counter()

    def define(index: int) -> None:
        dom = conn.defineXML(GUEST_XML.format(name=f"{prefix}{index:05d}"))
        if index % 2 == 0:
            dom.create()

    in_threads(lambda offset: define(start + offset), stop - start)
    elapsed = time.perf_counter() - started
    running = sum(1 for index in range(start, stop) if index % 2 == 0)
    return (
        f"setup: defined {stop - start:,} guests ({running:,} started) in {elapsed:.2f} s "
        f"({SETUP_THREADS} threads, one connection): {stop:,} defined"
    )


def remove_guests(conn: libvirt.virConnect, prefix: str) -> str:
    """Destroy and undefine every domain named ``prefix*``: two listings, then the calls."""
    started = time.perf_counter()
    mine = [dom for dom in conn.listAllDomains(0) if dom.name().startswith(prefix)]
    active = {dom.name() for dom in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE)}
    failures: list[str] = []

    def remove(index: int) -> None:
        dom = mine[index]
        try:
            if dom.name() in active:
                dom.destroy()
            dom.undefine()
        except libvirt.libvirtError as exc:
            failures.append(f"{dom.name()}: {exc}")

    in_threads(remove, len(mine))
    elapsed = time.perf_counter() - started
    text = (
        f"cleanup: destroyed {len(active & {dom.name() for dom in mine}):,} and undefined "
        f"{len(mine):,} guests in {elapsed:.2f} s"
    )
    if failures:
        text += f"; {len(failures)} failed, e.g. {failures[0]}"
    return text


class LibvirtErrors:
    """Count libvirt's errors instead of printing them (the lister handles vanished domains)."""

    def __init__(self) -> None:
        self.count = 0
        self.last = ""

    def __call__(self, _context: object, error: tuple[Any, ...]) -> None:
        self.count += 1
        self.last = str(error[2])


@contextlib.contextmanager
def sigterm_as_exit() -> Iterator[None]:
    """Turn SIGTERM into SystemExit, so that the guests are removed."""

    def leave(signum: int, _frame: Any) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, leave)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def machine(conn: libvirt.virConnect) -> list[str]:
    """The machine, and the versions of libvirt's library, daemon and binding."""

    def dotted(number: int) -> str:
        return f"{number // 1_000_000}.{number // 1000 % 1000}.{number % 1000}"

    return [
        machine_line(),
        f"libvirt {dotted(libvirt.getVersion())} (library), {dotted(conn.getLibVersion())} "
        f"(libvirtd, {conn.getType()} driver); libvirt-python "
        f"{importlib.metadata.version('libvirt-python')}",
    ]
