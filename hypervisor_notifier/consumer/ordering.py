"""Which received events an application should see: no duplicate, none out of order."""

from __future__ import annotations

import collections
import enum

from hypervisor_notifier.events import LifecycleEvent


class Verdict(enum.Enum):
    """What to do with a received event."""

    DELIVER = "deliver"
    #: Its event_id was delivered before (a redelivery after a reconnect).
    DUPLICATE = "duplicate"
    #: A later event of the same instance and host was delivered already.
    STALE = "stale"


class EventFilter:
    """Dedupe on ``event_id`` and keep each instance's events in ``seq`` order.

    Publishers send in order and queues are FIFO, so an older event arrives
    after a newer one only when the broker refused a message and the
    publisher sent it again: delivering it would roll the instance's state
    back, so it is reported STALE instead.

    Arguments:
        max_ids: How many delivered event_ids to remember (oldest forgotten first).

    """

    def __init__(self, max_ids: int = 100_000) -> None:
        self.max_ids = max_ids
        self._seen: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._last_seq: dict[tuple[str, str], int] = {}

    def verdict(self, event: LifecycleEvent) -> Verdict:
        """Judge ``event`` without recording it."""
        if event.event_id in self._seen:
            return Verdict.DUPLICATE
        last = self._last_seq.get((event.host, event.instance_uuid))
        if last is not None and event.seq < last:
            return Verdict.STALE
        return Verdict.DELIVER

    def delivered(self, event: LifecycleEvent) -> None:
        """Record that the application has handled ``event``."""
        self._seen[event.event_id] = None
        if len(self._seen) > self.max_ids:
            self._seen.popitem(last=False)
        key = (event.host, event.instance_uuid)
        self._last_seq[key] = max(event.seq, self._last_seq.get(key, event.seq))
