"""Several Subscribers over one connection (SubscriberGroup), against a real RabbitMQ node."""

from __future__ import annotations

import collections

import amqp
import pytest

from hypervisor_notifier import wire
from hypervisor_notifier.consumer import Subscriber, SubscriberGroup

from .conftest import TIMEOUT, TOPIC, Collector
from .test_subscriber import declare_host_queue, instance_events, publish

HOSTS = 3


@pytest.fixture
def fleet(private_broker, names):
    """Three host names, their exchange and queues on the private node; deleted after."""
    hosts = [f"{names['host']}-{index}" for index in range(HOSTS)]
    with private_broker.channel() as channel:
        for host in hosts:
            declare_host_queue(channel, names["exchange"], host)
    yield hosts
    with private_broker.channel() as channel:
        for host in hosts:
            channel.queue_delete(wire.host_queue_name(TOPIC, host))
        channel.exchange_delete(names["exchange"])


def start_group(url: str, exchange: str, hosts: list[str], before=None):
    """A group of one Subscriber per host, each with a Collector (``before`` sees each event)."""
    collectors = {host: Collector() for host in hosts}

    def callback_of(host: str):
        def callback(event):
            if before is not None:
                before(event)
            collectors[host](event)

        return callback

    members = [Subscriber(url, callback_of(host), host=host, exchange=exchange) for host in hosts]
    group = SubscriberGroup(url, members)
    group.start()
    assert all(member.wait_ready(TIMEOUT) for member in members), "a member is not consuming"
    return group, members, collectors


def consumers_by_queue(node) -> dict[str, str]:
    """Each queue's consumer's channel pid, and each channel's connection pid, on ``node``."""
    channels = dict(
        line.split("\t")
        for line in node.ctl(
            "list_channels", "pid", "connection", "--no-table-headers"
        ).splitlines()
    )
    consumers = node.ctl("list_consumers", "queue_name", "channel_pid", "--no-table-headers")
    return {
        queue: (channel, channels[channel])
        for queue, channel, *_ in (line.split("\t") for line in consumers.splitlines())
    }


def test_each_member_gets_its_own_hosts_events_in_order_over_one_connection(
    private_broker, names, fleet
):
    group, members, collectors = start_group(private_broker.url, names["exchange"], fleet)
    try:
        sent = {host: instance_events(host, 5) for host in fleet}
        # Misrouted into the first host's queue: an event naming the second host.
        stray = instance_events(fleet[1], 1)[0]
        with private_broker.channel() as channel:
            for index in range(5):
                publish(channel, names["exchange"], *(sent[host][index] for host in fleet))
            channel.basic_publish(
                amqp.Message(wire.encode(stray), delivery_mode=2),
                names["exchange"],
                wire.routing_key(TOPIC, fleet[0]),
            )
            marker = instance_events(fleet[0], 1)[0]
            publish(channel, names["exchange"], marker)
        collectors[fleet[0]].wait_for(lambda e: e.event_id == marker.event_id)
        for host in fleet[1:]:
            assert collectors[host].wait_for_count(5)
        assert collectors[fleet[0]].events == [*sent[fleet[0]], marker]
        assert [collectors[host].events for host in fleet[1:]] == [sent[h] for h in fleet[1:]]
        assert members[0].stats.other_host == 1
        consumers = consumers_by_queue(private_broker)
        queues = [wire.host_queue_name(TOPIC, host) for host in fleet]
        # A channel each, one connection for all.
        assert len({consumers[queue][0] for queue in queues}) == HOSTS
        assert len({consumers[queue][1] for queue in queues}) == 1
    finally:
        group.stop()
    assert not any(member.wait_ready(0) for member in members)


def test_a_members_failing_callback_redelivers_in_order_and_the_others_see_theirs_once(
    private_broker, names, fleet
):
    sent = {host: instance_events(host, 4) for host in fleet}
    failures = collections.Counter()
    flaky = sent[fleet[0]][1]

    def before(event):
        if event.event_id == flaky.event_id and failures[event.event_id] < 2:
            failures[event.event_id] += 1
            raise RuntimeError("application not ready")

    group, members, collectors = start_group(
        private_broker.url, names["exchange"], fleet, before=before
    )
    try:
        with private_broker.channel() as channel:
            for index in range(4):
                publish(channel, names["exchange"], *(sent[host][index] for host in fleet))
        for host in fleet:
            assert collectors[host].wait_for_count(4)
        # The callback of every member saw each of its events once, in order.
        assert [collectors[host].events for host in fleet] == [sent[host] for host in fleet]
        assert members[0].stats.retried == 2
    finally:
        group.stop()


def test_a_group_takes_at_least_one_subscriber():
    with pytest.raises(ValueError, match="1 to"):
        SubscriberGroup("rabbit://guest:guest@127.0.0.1:5672/", [])
