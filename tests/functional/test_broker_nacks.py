"""A broker that nacks publishes (a full queue with overflow reject-publish): nothing is lost."""

from __future__ import annotations

import subprocess

import pytest

from hypervisor_notifier.events import Transition

from .conftest import TOPIC, unique

QUEUE_LIMIT = 3


@pytest.fixture
def full_queue_policy(names):
    """RabbitMQ nacks publishes to this test's host queue beyond QUEUE_LIMIT messages."""
    policy = unique("hn-reject")
    pattern = f"^{TOPIC}\\.{names['host']}$".replace("-", "\\-")
    definition = f'{{"max-length": {QUEUE_LIMIT}, "overflow": "reject-publish"}}'
    subprocess.run(
        ["rabbitmqctl", "-q", "set_policy", "--apply-to", "queues", policy, pattern, definition],
        check=True, capture_output=True,
    )  # fmt: skip
    yield
    subprocess.run(["rabbitmqctl", "-q", "clear_policy", policy], check=False)


@pytest.mark.usefixtures("full_queue_policy")
def test_nacked_events_are_sent_again_in_order_once_the_queue_has_room(
    make_domain, start_service, subscribe
):
    dom = make_domain()
    dom.create()
    service = start_service()
    service.wait_for_log("resync (connected)")
    calls = ["suspend", "resume"] * 4
    for call in calls:
        getattr(dom, call)()
    service.wait_for_log("nacked")
    assert service.process.poll() is None

    # A consumer frees the queue: the publisher's resends now fit, in order.
    _, collector = subscribe()
    uuid = dom.UUIDString()
    collector.wait_for(lambda _: len(collector.of(uuid, resync=False)) >= len(calls))
    pushed = collector.of(uuid, resync=False)
    assert [e.transition for e in pushed] == [Transition.PAUSED, Transition.RESUMED] * 4
    assert [e.seq for e in pushed] == sorted(e.seq for e in pushed)
    assert service.stop() == 0
