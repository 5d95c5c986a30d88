"""Chaos: a seeded schedule of faults while guests churn; nothing accepted is lost.

A private RabbitMQ node of the test's own is stopped, killed, filled,
alarmed and has its host queue deleted; the service is SIGKILLed and has its
clock stepped by an hour (libfaketime); all the while guests churn on the
libvirtd test driver and a Subscriber records what it delivers. Then the
faults stop, the service settles, and the history checker
(tests/functional/chaos/checker.py) compares the hypervisor operations with
what the consumer received. It prints its seed and counts (even when pytest
captures output).

It runs by default (``tox -e functional``), 75 s of faults on a fresh seed.
``HN_CHAOS_SECONDS=N`` runs N seconds, ``HN_CHAOS_LONG=1`` fifteen minutes;
``HN_CHAOS_SEED=S`` replays the faults of seed S (the guests' churn and the
timing differ between runs).

The faults are those the product must survive: none of them makes the broker
discard an event it confirmed (deleting a queue that holds events does; see
the injector and doc/source/operations.rst, "What the broker can destroy").
"""

from __future__ import annotations

import logging
import random
import re
import time
from collections.abc import Iterator
from pathlib import Path

import libvirt
import pytest

from hypervisor_notifier import wire
from hypervisor_notifier.consumer import Subscriber
from hypervisor_notifier.events import LifecycleEvent
from tests.service_process import TIMEOUT, write_config

from .chaos import schedule
from .chaos.checker import History, Seen, check
from .chaos.churn import Churn
from .chaos.injector import FAKETIME_LIB, ClockedService, Injector
from .chaos.rabbit import ChaosRabbit, FirehoseTap
from .conftest import LIBVIRT_URI, TOPIC, Collector, unique
from .faults import metrics, settle, wait_until
from .privaterabbit import RABBITMQ_BIN

#: The longest the service may take to settle once the faults stop (the
#: subscriber's reconnect backoff alone may reach 30 s).
SETTLE_TIMEOUT = 180.0
STALE_LINE = re.compile(r"dropped stale event (\S+) ")


class StaleDrops(logging.Handler):
    """The event_ids the subscriber logs as dropped stale."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.event_ids: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        found = STALE_LINE.search(record.getMessage())
        if found:
            self.event_ids.append(found.group(1))


@pytest.fixture
def chaos_node(tmp_path: Path) -> Iterator[ChaosRabbit]:
    if not (RABBITMQ_BIN / "rabbitmq-server").exists():
        pytest.skip(f"no {RABBITMQ_BIN}/rabbitmq-server to start a private node with")
    if not FAKETIME_LIB.exists():
        pytest.skip(f"no {FAKETIME_LIB} (apt-get install faketime)")
    directory = tmp_path / "rabbit"
    directory.mkdir()
    node = ChaosRabbit(directory)
    try:
        node.start()
        yield node
    finally:
        node.stop()


@pytest.fixture
def stale_drops() -> Iterator[StaleDrops]:
    handler = StaleDrops()
    # The consumer package's logger: whichever of its modules judges the events.
    logger = logging.getLogger("hypervisor_notifier.consumer")
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)


def service_config(path: Path, node: ChaosRabbit, host: str, exchange: str) -> None:
    write_config(
        path,
        {
            "DEFAULT": {"host": host, "shutdown_timeout": "10"},
            "outbox": {"path": str(path.parent / "outbox.sqlite")},
            "health": {"port": "0"},
            "libvirt": {"connection_uri": LIBVIRT_URI, "reconnect_interval_max": "1"},
            "publisher": {
                "transport_url": node.url,
                "exchange": exchange,
                "reconnect_interval_max": "1",
            },
        },
    )


def settled(service: ClockedService, collector: Collector, churn: Churn) -> float | None:
    """Seconds until a fresh guest's event arrived and the outbox emptied; None if not."""
    started = time.monotonic()
    # Pushed, or found by the resync of a service still starting: either way
    # its event comes after every event the service published before it.
    sentinel = churn.add_guest(start=True)
    try:
        wait_until(lambda: collector.of(sentinel), SETTLE_TIMEOUT, "the sentinel's event")
        port = service.current.health_port
        wait_until(
            lambda: metrics(port)["hypervisor_notifier_outbox_depth"] == 0,
            SETTLE_TIMEOUT,
            "the outbox to empty",
        )
    except AssertionError as exc:
        print(f"not settled: {str(exc)[:300]}")
        return None
    seconds = time.monotonic() - started
    # The checker needs what is still on its way, too.
    settle(collector, list(churn.guests), quiet=1.0)
    return seconds


# The faults, then the settling, booting the node and starting everything.
@pytest.mark.timeout(schedule.settings()[1] + SETTLE_TIMEOUT * 2 + 300)
def test_nothing_accepted_is_lost_under_chaos(
    tmp_path: Path,
    chaos_node: ChaosRabbit,
    hypervisor: libvirt.virConnect,
    stale_drops: StaleDrops,
    capsys: pytest.CaptureFixture[str],
) -> None:
    seed, seconds = schedule.settings()
    # The seed and the counts reach the terminal even when pytest captures output.
    with capsys.disabled():
        replay = f"{schedule.SEED_VARIABLE}={seed} replays it"
        print(f"\nchaos: seed {seed} ({replay}), {seconds:.0f} s")
    host, exchange = unique("chaos"), unique("hn-chaos")
    queue = wire.host_queue_name(TOPIC, host)
    tap = FirehoseTap(chaos_node, exchange, queue)
    tap.start()
    wait_until(tap.ready.is_set, TIMEOUT, "the firehose tap to consume")

    collector = Collector()
    subscriber = Subscriber(chaos_node.url, collector, host=host, exchange=exchange)
    subscriber.start()
    config = tmp_path / "notifier.conf"
    service_config(config, chaos_node, host, exchange)
    service = ClockedService(config, tmp_path / "outbox.sqlite", tmp_path / "clock")
    churn = Churn(hypervisor, random.Random(seed))
    try:
        assert subscriber.wait_ready(TIMEOUT), "subscriber did not start consuming"
        service.start().wait_for_log("resync (connected)")
        churn.start()
        injector = Injector(chaos_node, service, queue, print)
        deadline = time.monotonic() + seconds
        for fault in schedule.faults(seed):
            if time.monotonic() >= deadline or not churn.is_alive():
                break
            injector.apply(fault)
        churn.finish()
        settle_seconds = settled(service, collector, churn)
        service.stop()
        model_errors = churn.model_errors()

        tap.wait_quiet()
        accepted, publishes = tap.snapshot()
        accepted.update(service.left)
        history = History(
            guests=churn.guests,
            # Guest events only: the host events (connected at each start, disconnected
            # when libvirtd goes) reach no callback of the subscriber.
            accepted={
                event_id: Seen.of(event)
                for event_id, event in accepted.items()
                if isinstance(event, LifecycleEvent)
            },
            publishes=publishes,
            delivered=[Seen.of(event) for event in collector.events],
            stale=stale_drops.event_ids,
            duplicates_filtered=subscriber.stats.duplicates,
            faults=injector.windows,
            settle_seconds=settle_seconds,
        )
        report = check(history)
        with capsys.disabled():
            print(report.text())
            print(f"  service runs: {len(service.runs)}; broker boots: {chaos_node.starts}")
    finally:
        subscriber.stop()
        tap.stop()
        for run in service.runs:
            run.stop()
        churn.halt()
        churn.cleanup()
    assert not model_errors, f"the churn's history is not what libvirt says: {model_errors}"
    # Stale drops are known by the subscriber's log line: each must have been seen.
    assert len(stale_drops.event_ids) == subscriber.stats.stale, "a stale drop was not logged"
    assert not service.unreadable, f"could not read the outbox: {service.unreadable}"
    assert report.ok, f"seed {seed}\n{report.text()}"
