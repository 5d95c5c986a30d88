"""``hypervisor-events idle-queues`` against the real RabbitMQ (its own rabbitmqctl)."""

from __future__ import annotations

import subprocess
import sys
import time

import amqp

from .conftest import TIMEOUT, unique


def test_a_host_queue_nobody_consumed_for_a_day_is_listed_and_a_consumed_one_is_not(broker):
    topic = unique("hn_retired")
    retired, busy = f"{topic}.compute7", f"{topic}.compute8"
    for queue in (retired, busy):
        broker.queue_declare(queue, durable=True, auto_delete=False)
        # As the notifier publishes: the AMQP timestamp is when the event occurred.
        broker.basic_publish(amqp.Message(b"{}", timestamp=int(time.time()) - 2 * 86_400),
                             "", queue)  # fmt: skip
    tag = broker.basic_consume(busy, callback=lambda _message: None)
    try:
        result = subprocess.run(
            [sys.executable, "-m", "hypervisor_notifier.cmd.events", "idle-queues",
             "--topic", topic, "--older-than", "1d"],
            capture_output=True, text=True, timeout=TIMEOUT,
        )  # fmt: skip
    finally:
        broker.basic_cancel(tag)
        broker.queue_delete(retired)
        broker.queue_delete(busy)

    assert result.returncode == 0, result.stderr
    (line,) = result.stdout.splitlines()
    name, kind, messages, oldest = line.split("\t")
    assert (name, kind, messages) == (retired, "classic", "1 messages")
    assert oldest.startswith("oldest 48.") or oldest.startswith("oldest 47.")
