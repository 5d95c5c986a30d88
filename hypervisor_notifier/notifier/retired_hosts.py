"""Host queues nobody consumes: retired hosts, or a subscriber that stopped.

Each notifier declares its host's durable queue ``<topic>.<host>``, so events
wait there while no subscriber runs. A host that is retired leaves its queue
behind, filling as long as its notifier ran. The broker knows which queues
have no consumer and, for classic queues, when the oldest waiting message
was published (its AMQP ``timestamp``, which the notifier sets to when the
event occurred): ``rabbitmqctl list_queues ... head_message_timestamp``.
A quorum queue does not report it: such a queue without a consumer is
listed with its message count only.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
from collections.abc import Iterable, Mapping
from typing import Any

COLUMNS = ("name", "type", "consumers", "messages", "head_message_timestamp")


@dataclasses.dataclass(frozen=True)
class IdleQueue:
    """A host queue without a consumer.

    Arguments:
        name: The queue (``<topic>.<host>``).
        queue_type: ``classic`` or ``quorum``.
        messages: Messages waiting.
        oldest_age: Seconds the oldest waiting message has waited (None: the broker cannot tell).

    """

    name: str
    queue_type: str
    messages: int
    oldest_age: float | None


def idle_host_queues(
    rows: Iterable[Mapping[str, Any]], topic: str, *, older_than: float, now: float
) -> list[IdleQueue]:
    """The ``<topic>.*`` queues of ``rows`` with no consumer whose oldest event is old enough.

    A queue whose oldest message's age is unknown (empty, or quorum) is listed too:
    nothing says it is in use.

    Arguments:
        rows: ``rabbitmqctl list_queues`` rows with :data:`COLUMNS`.
        topic: The notifiers' topic.
        older_than: Seconds the oldest waiting event must have waited.
        now: The current UNIX time.

    """
    found = []
    for row in rows:
        name = str(row.get("name", ""))
        if not name.startswith(f"{topic}.") or int(row.get("consumers") or 0) > 0:
            continue
        stamp = row.get("head_message_timestamp")
        age = (
            now - float(stamp) if isinstance(stamp, int | float) or str(stamp).isdigit() else None
        )
        if age is not None and age < older_than:
            continue
        found.append(IdleQueue(name, str(row.get("type", "")), int(row.get("messages") or 0), age))
    return sorted(found, key=lambda queue: queue.name)


def list_queues(rabbitmqctl: str, vhost: str) -> list[dict[str, Any]]:
    """Every queue of ``vhost`` with :data:`COLUMNS`, as ``rabbitmqctl`` reports them.

    Raises:
        OSError: rabbitmqctl cannot be run, or failed (its output in the text).

    """
    # The operator's own rabbitmqctl (a path, no shell), run with fixed arguments.
    result = subprocess.run(  # noqa: S603
        [rabbitmqctl, "-q", "list_queues", "-p", vhost, *COLUMNS, "--formatter", "json"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    if result.returncode:
        raise OSError(
            f"{rabbitmqctl} list_queues failed: {(result.stderr or result.stdout).strip()}"
        )
    return json.loads(result.stdout or "[]")
