"""Helpers of the fault tests: broker control, bursts of libvirt calls, health checks.

Real service process, real libvirtd (test driver), real RabbitMQ. A broker
is stopped only if it is a private node of the test's own (privaterabbit.py;
never the shared one, which others' tests use at the same time), briefly
(``rabbitmqctl stop_app``) and always started again in a ``finally``. A
failing precondition raises :class:`PreconditionFailed`, to tell a broken
setup from the behaviour under test.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator

import libvirt
from prometheus_client.parser import text_string_to_metric_families

from hypervisor_notifier.events import PowerState, Transition
from tests.service_process import TIMEOUT, healthz, http_get

from .privaterabbit import PrivateRabbit

POWER_STATE = {
    libvirt.VIR_DOMAIN_RUNNING: PowerState.RUNNING,
    libvirt.VIR_DOMAIN_PAUSED: PowerState.PAUSED,
}
#: Transition -> the power state it leaves the guest in.
AFTER = {Transition.PAUSED: PowerState.PAUSED, Transition.RESUMED: PowerState.RUNNING}


# -- helpers -------------------------------------------------------------------


@contextlib.contextmanager
def broker_stopped(node: PrivateRabbit) -> Iterator[None]:
    """Stop the private node's application (``stop_app``); always start it again.

    Arguments:
        node: A private node of the test's own.

    """
    try:
        node.ctl("stop_app")
        yield
    finally:
        node.ctl("start_app")
        node.ctl("await_startup")


def sample_key(name: str, labels: dict[str, str]) -> str:
    """``name{label="value",...}``, as the exposition writes it."""
    if not labels:
        return name
    return name + "{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"


def metrics(port: int) -> dict[str, float]:
    """Every sample of /metrics, keyed by ``sample_key``."""
    status, text = http_get(port, "/metrics")
    assert status == 200, text
    return {
        sample_key(sample.name, sample.labels): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def wait_until(
    condition: Callable[[], object],
    timeout: float = TIMEOUT,
    what: str | Callable[[], str] = "",
) -> None:
    """Poll ``condition``; fail with ``what`` (or what it returns then) after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            message = what() if callable(what) else what
            raise AssertionError(f"not true after {timeout} s: {message or condition}")
        time.sleep(0.05)


def wait_for_health(port: int, want: int, timeout: float = TIMEOUT) -> dict:
    """Poll /healthz until it answers ``want``; return its body."""
    seen: list[tuple[int, dict]] = []

    def answered() -> bool:
        seen[:] = [healthz(port)]
        return seen[0][0] == want

    wait_until(answered, timeout, lambda: f"/healthz {want}; last answer {seen}")
    return seen[0][1]


class HealthWatch(threading.Thread):
    """Poll /healthz until stopped, keeping every problem it reported (a scraper's view).

    Arguments:
        port: The service's health port.

    """

    def __init__(self, port: int) -> None:
        super().__init__(name="health-watch", daemon=True)
        self.port = port
        self.problems: set[str] = set()
        self._stopping = threading.Event()
        self.start()

    def run(self) -> None:
        # wait() returns True once stopped: poll every 0.1 s until then.
        while not self._stopping.wait(0.1):
            with contextlib.suppress(OSError):  # a service stopping, or too busy to answer
                self.problems.update(healthz(self.port)[1]["problems"])

    def stop(self) -> None:
        self._stopping.set()
        self.join(TIMEOUT)


class Burst(threading.Thread):
    """Suspend and resume each domain in turn, ``calls`` libvirt calls in all.

    ``expected[uuid]`` is the transitions the calls made, in order;
    ``count`` is the number of calls made so far. ``pace`` seconds of sleep
    after each call spread the burst out (0: as fast as libvirt goes).
    """

    def __init__(self, domains: list[libvirt.virDomain], calls: int, pace: float = 0.0) -> None:
        super().__init__(name="burst", daemon=True)
        self.domains = domains
        self.calls = calls
        self.pace = pace
        self.count = 0
        self.expected: dict[str, list[Transition]] = {d.UUIDString(): [] for d in domains}
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            paused = {
                d.UUIDString(): d.state()[0] == libvirt.VIR_DOMAIN_PAUSED for d in self.domains
            }
            while self.count < self.calls:
                dom = self.domains[self.count % len(self.domains)]
                uuid = dom.UUIDString()
                if paused[uuid]:
                    dom.resume()
                    self.expected[uuid].append(Transition.RESUMED)
                else:
                    dom.suspend()
                    self.expected[uuid].append(Transition.PAUSED)
                paused[uuid] = not paused[uuid]
                self.count += 1
                if self.pace:
                    time.sleep(self.pace)
        except BaseException as exc:
            self.error = exc

    def wait_count(self, count: int) -> None:
        wait_until(lambda: self.count >= count or not self.is_alive(), what=f"{count} calls")

    def finish(self) -> None:
        self.join(TIMEOUT)
        assert not self.is_alive(), "the burst did not finish"
        if self.error is not None:
            raise self.error


def running_domains(make_domain, count: int) -> list[libvirt.virDomain]:
    domains = [make_domain() for _ in range(count)]
    for dom in domains:
        dom.create()
    return domains


def real_power_state(dom: libvirt.virDomain) -> PowerState:
    return POWER_STATE[dom.state()[0]]


def sentinel_received(make_domain, collector) -> None:
    """Start a fresh domain and wait for its event: one ordered stream per host,
    so every event the service published before it has been received."""
    sentinel = make_domain()
    sentinel.create()
    collector.wait_for(lambda e: e.instance_uuid == sentinel.UUIDString() and not e.resync)


def settle(collector, uuids, quiet: float = 0.5, timeout: float = 10.0) -> None:
    """Wait (at most ``timeout``) until no event of ``uuids`` arrived for ``quiet`` s."""

    def count() -> int:
        return sum(len(collector.of(uuid)) for uuid in uuids)

    deadline = time.monotonic() + timeout
    seen = count()
    while time.monotonic() < deadline:
        time.sleep(quiet)
        if count() == seen:
            return
        seen = count()


def assert_seq_increasing(collector, uuids) -> None:
    for uuid in uuids:
        seqs = [event.seq for event in collector.of(uuid)]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs), (uuid, seqs)


def assert_no_duplicate_delivered(collector) -> None:
    ids = [event.event_id for event in collector.events]
    assert len(ids) == len(set(ids)), "the subscriber delivered an event_id twice"


class PreconditionFailed(Exception):
    """A step before the checked behaviour failed: the setup, not the behaviour under test."""


@contextlib.contextmanager
def precondition(what: str) -> Iterator[None]:
    try:
        yield
    except AssertionError as exc:
        raise PreconditionFailed(f"{what}: {exc}") from exc


def resync_lines(service) -> str:
    return "".join(line for line in service.lines if "resync (" in line)
