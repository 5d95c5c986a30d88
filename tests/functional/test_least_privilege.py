"""The RabbitMQ users of tools/rabbitmq-users.sh do their job and nothing more (real broker)."""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

import amqp
import pytest

from hypervisor_notifier import wire
from tests.factories import make_event

from .conftest import TOPIC, unique

SCRIPT = Path(__file__).parents[2] / "tools" / "rabbitmq-users.sh"


@pytest.fixture
def rabbit_user(names):
    """``rabbit_user(role)``: a user made by the script for this test's exchange; its URL.

    The users are deleted after the test.
    """
    created = []

    def make(role: str, **env: str) -> tuple[str, str, str]:
        user, password = unique(f"hn-{role}"), uuid.uuid4().hex
        created.append(user)
        result = subprocess.run(
            [str(SCRIPT), role, user, password],
            env={**os.environ, "HN_EXCHANGE": names["exchange"], "HN_TOPIC": TOPIC, **env},
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        return user, password, f"rabbit://{user}:{password}@127.0.0.1:5672/"

    yield make
    for user in created:
        subprocess.run(["rabbitmqctl", "-q", "delete_user", user], check=False,
                       capture_output=True)  # fmt: skip


def connect(user: str, password: str) -> amqp.Connection:
    connection = amqp.Connection("127.0.0.1:5672", userid=user, password=password)
    connection.connect()
    return connection


def queued(broker: amqp.Channel, queue: str) -> int:
    _, count, _ = broker.queue_declare(queue, passive=True)
    return count


def test_the_script_is_idempotent_and_refuses_an_unknown_role(rabbit_user):
    user, _, _ = rabbit_user("consumer")
    again = subprocess.run([str(SCRIPT), "consumer", user, "new-password"],
                           capture_output=True, text=True, check=False)  # fmt: skip
    assert again.returncode == 0, again.stderr
    connect(user, "new-password").close()

    wrong = subprocess.run([str(SCRIPT), "admin", user, "x"], capture_output=True, text=True,
                           check=False)  # fmt: skip
    assert wrong.returncode == 2 and "unknown role 'admin'" in wrong.stderr


def test_a_consumer_user_cannot_publish_to_the_exchange_nor_delete_it_but_consumes_its_queue(
    broker, names, rabbit_user, start_publisher, subscribe
):
    user, password, url = rabbit_user("consumer", HN_HOST=names["host"])
    # The notifier declares exchange and host queue (guest here).
    start_publisher().send(make_event(host=names["host"]))
    host_queue = wire.host_queue_name(TOPIC, names["host"])
    assert queued(broker, host_queue) == 1

    connection = connect(user, password)
    try:
        channel = connection.channel()
        forged = amqp.Message(wire.encode(make_event(host=names["host"])), delivery_mode=2)
        # With confirms, the publish waits for the broker's answer: a refusal.
        with pytest.raises(amqp.exceptions.AccessRefused, match="ACCESS_REFUSED"):
            channel.basic_publish_confirm(forged, names["exchange"],
                                          wire.routing_key(TOPIC, names["host"]))  # fmt: skip
        channel = connection.channel()
        with pytest.raises(amqp.exceptions.AccessRefused):
            channel.exchange_delete(names["exchange"])
        channel = connection.channel()
        with pytest.raises(amqp.exceptions.AccessRefused):
            channel.queue_delete(wire.host_queue_name(TOPIC, unique("other-host")))
    finally:
        connection.collect()
    assert queued(broker, host_queue) == 1, "the refused publish must not have arrived"

    # ... and the Subscriber works under it: passive exchange declare, its own queue.
    subscriber, collector = subscribe(transport_url=url)
    event = make_event(host=names["host"])
    start_publisher().send(event)
    collector.wait_for(lambda e: e.event_id == event.event_id)
    assert subscriber.stats.delivered == 2


def test_a_notifier_user_publishes_through_the_publisher_but_cannot_consume(
    broker, names, rabbit_user, start_publisher
):
    user, password, url = rabbit_user("notifier")
    event = make_event(host=names["host"])
    # Declares the exchange and the host queue, binds, publishes with confirms.
    start_publisher(transport_url=url).send(event)
    host_queue = wire.host_queue_name(TOPIC, names["host"])
    assert queued(broker, host_queue) == 1

    connection = connect(user, password)
    try:
        with pytest.raises(amqp.exceptions.AccessRefused):
            connection.channel().basic_get(host_queue)
        with pytest.raises(amqp.exceptions.AccessRefused):
            connection.channel().basic_consume(host_queue)
    finally:
        connection.collect()
    assert queued(broker, host_queue) == 1
