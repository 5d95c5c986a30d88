"""A process holding over 1,024 descriptors (many connections): publishing and consuming work.

``select.select`` refuses descriptors numbered 1024 or above; a process
simulating or consuming many hosts has them. The publisher, its outbox and
the subscriber wait with ``poll`` (:mod:`hypervisor_notifier.fdwait`).
"""

from __future__ import annotations

import os
import resource

import pytest

from hypervisor_notifier.consumer import Subscriber, SubscriberGroup

from .conftest import BROKER_URL, TIMEOUT, Collector
from .test_subscriber import instance_events

#: Descriptors opened first, so that the publisher's and subscriber's come after 1024.
FILLER = 1100


@pytest.fixture
def high_descriptors():
    """Open FILLER descriptors (of /dev/null) for the test; close them after."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < FILLER + 100:
        pytest.skip(f"RLIMIT_NOFILE {soft} is too low to open {FILLER} descriptors")
    filler = [os.open(os.devnull, os.O_RDONLY) for _ in range(FILLER)]
    assert max(filler) >= 1024
    yield
    for fd in filler:
        os.close(fd)


def test_a_publisher_and_a_subscriber_group_with_descriptors_above_1024(
    high_descriptors, names, start_publisher
):
    publisher = start_publisher()
    collector = Collector()
    member = Subscriber(BROKER_URL, collector, host=names["host"], exchange=names["exchange"])
    group = SubscriberGroup(BROKER_URL, [member])
    group.start()
    try:
        assert group.wait_ready(TIMEOUT)
        assert publisher.publisher.outbox.wake_fd >= 1024
        events = instance_events(names["host"], 20)
        publisher.send(*events)  # every one confirmed by the broker
        assert collector.wait_for_count(len(events))
        assert collector.events == events
    finally:
        group.stop()
