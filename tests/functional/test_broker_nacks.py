"""A broker that nacks publishes (a full queue with overflow reject-publish): nothing is lost.

On a private RabbitMQ node: a policy is a fault the shared node must not see.
"""

from __future__ import annotations

import pytest

from hypervisor_notifier.events import Transition

QUEUE_LIMIT = 3


@pytest.fixture
def full_queue_policy(reject_publish):
    reject_publish(QUEUE_LIMIT)


@pytest.mark.usefixtures("full_queue_policy")
def test_nacked_events_are_sent_again_in_order_once_the_queue_has_room(
    private_broker, make_domain, start_service, subscribe
):
    dom = make_domain()
    dom.create()
    service = start_service(transport_url=private_broker.url)
    service.wait_for_log("resync (connected)")
    calls = ["suspend", "resume"] * 4
    for call in calls:
        getattr(dom, call)()
    service.wait_for_log("nacked")
    assert service.process.poll() is None

    # A consumer frees the queue: the publisher's resends now fit, in order.
    _, collector = subscribe(transport_url=private_broker.url)
    uuid = dom.UUIDString()
    collector.wait_for(lambda _: len(collector.of(uuid, resync=False)) >= len(calls))
    pushed = collector.of(uuid, resync=False)
    assert [e.transition for e in pushed] == [Transition.PAUSED, Transition.RESUMED] * 4
    assert [e.seq for e in pushed] == sorted(e.seq for e in pushed)
    assert service.stop() == 0
