"""What a burst measurement is made of: the events, the result, the check of the queue.

Not a benchmark: ``throughput.py`` and ``oslo_notifier.py`` use it.
"""

from __future__ import annotations

import dataclasses
import datetime
import uuid

import amqp
from harness import BROKER

from hypervisor_notifier.events import LifecycleEvent, Observation, PowerState, Transition
from hypervisor_notifier.notifier.service import SequenceCounter

#: Guests the events of a burst cycle over (paused, then resumed, ...).
INSTANCES = 500


class EventMaker:
    """Events of one host as the service stamps them: paused/resumed over INSTANCES guests."""

    def __init__(self, host: str) -> None:
        self.host = host
        self.sequence = SequenceCounter()
        self.guests = [(str(uuid.uuid4()), f"instance-{index:08x}") for index in range(INSTANCES)]
        self.made = 0

    def make(self, count: int) -> list[LifecycleEvent]:
        return [self._event(datetime.datetime.now(datetime.timezone.utc)) for _ in range(count)]

    def _event(self, now: datetime.datetime) -> LifecycleEvent:
        instance_uuid, name = self.guests[self.made % INSTANCES]
        paused = (self.made // INSTANCES) % 2 == 0
        self.made += 1
        observation = Observation(
            instance_uuid=instance_uuid,
            instance_name=name,
            transition=Transition.PAUSED if paused else Transition.RESUMED,
            power_state=PowerState.PAUSED if paused else PowerState.RUNNING,
            reason="SUSPENDED" if paused else "RESUMED",
            detail="PAUSED" if paused else "UNPAUSED",
            occurred_at=now,
        )
        return LifecycleEvent.from_observation(
            observation, host=self.host, hypervisor="libvirt", seq=self.sequence.next()
        )


@dataclasses.dataclass
class Result:
    """Seconds for N events: to broker (no consumer), and with a consumer attached."""

    to_broker: float
    queued: QueueCheck
    to_consumer: float | None = None
    to_broker_with_consumer: float | None = None
    #: What else the path saw; ``problems``: what makes its figures suspect.
    notes: list[str] = dataclasses.field(default_factory=list)
    problems: list[str] = dataclasses.field(default_factory=list)

    def check(self, ok: bool, problem: str) -> None:
        if not ok:
            self.problems.append(problem)


@dataclasses.dataclass(frozen=True)
class QueueCheck:
    """What the broker held after a burst without consumer."""

    messages: int
    body_bytes: int
    persistent: bool


def after_burst(seconds: float, queue: str, count: int) -> Result:
    """A burst's result; the queue must hold ``count`` persistent messages (then emptied)."""
    queued = check_and_purge(queue)
    result = Result(seconds, queued)
    result.check(queued.messages == count, f"{queued.messages:,} messages queued, not {count:,}")
    result.check(queued.persistent, "messages not persistent")
    return result


def check_and_purge(queue: str) -> QueueCheck:
    """Count the queue's messages, look at one, then empty it for the next burst."""
    with amqp.Connection(**BROKER) as connection, connection.channel() as channel:
        _, messages, _ = channel.queue_declare(queue, passive=True)
        message = channel.basic_get(queue, no_ack=True)
        channel.queue_purge(queue)
    if message is None:
        return QueueCheck(messages, 0, persistent=False)
    # py-amqp decodes the body when the message names a content encoding.
    body = message.body.encode() if isinstance(message.body, str) else message.body
    return QueueCheck(messages, len(body), message.properties.get("delivery_mode") == 2)


def purge(queue: str) -> None:
    with amqp.Connection(**BROKER) as connection, connection.channel() as channel:
        channel.queue_purge(queue)


def rate(count: int, seconds: float | None, width: int = 11) -> str:
    return f"{count / seconds:>{width},.0f}" if seconds else f"{'-':>{width}}"
