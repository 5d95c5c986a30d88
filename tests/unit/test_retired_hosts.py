"""Which host queues ``hypervisor-events idle-queues`` lists."""

from __future__ import annotations

from hypervisor_notifier.notifier.retired_hosts import IdleQueue, idle_host_queues

NOW = 1_800_000_000.0
DAY = 86_400.0


def row(name, consumers=0, messages=3, stamp="", kind="classic"):
    return {"name": name, "type": kind, "consumers": consumers, "messages": messages,
            "head_message_timestamp": stamp}  # fmt: skip


def test_only_unconsumed_host_queues_whose_oldest_event_is_old_enough():
    rows = [
        row("hypervisor_events.retired", stamp=int(NOW - 3 * DAY)),
        row("hypervisor_events.busy", consumers=1, stamp=int(NOW - 3 * DAY)),
        row("hypervisor_events.recent", stamp=int(NOW - 60)),
        row("hypervisor_events.quorum", kind="quorum", messages=0),
        row("other.queue", stamp=int(NOW - 9 * DAY)),
    ]

    found = idle_host_queues(rows, "hypervisor_events", older_than=DAY, now=NOW)

    assert found == [
        IdleQueue("hypervisor_events.quorum", "quorum", 0, None),
        IdleQueue("hypervisor_events.retired", "classic", 3, 3 * DAY),
    ]
