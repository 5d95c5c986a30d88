"""Which received events an application should see: no duplicate, none out of order."""

from __future__ import annotations

import collections
import enum

from hypervisor_notifier.consumer.state import ConsumerState
from hypervisor_notifier.events import Stamp


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
        state: Where deliveries are also recorded, and reloaded from now, so
            the memory survives a restart; None: in memory only.

    """

    def __init__(self, max_ids: int = 100_000, state: ConsumerState | None = None) -> None:
        self.max_ids = max_ids
        self.state = state
        self._seen: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._last_seq: dict[tuple[str, str], int] = {}
        if state is not None:
            ids, self._last_seq = state.load()
            self._seen.update(dict.fromkeys(ids[-max_ids:]))

    def verdict(self, event: Stamp) -> Verdict:
        """Judge ``event`` without recording it."""
        if event.event_id in self._seen:
            return Verdict.DUPLICATE
        last = self._last_seq.get((event.host, event.subject))
        if last is not None and event.seq < last:
            return Verdict.STALE
        return Verdict.DELIVER

    def delivered(self, event: Stamp) -> None:
        """Record that the application has handled ``event`` (in the state file too)."""
        if self.state is not None:
            self.state.delivered(event.event_id, event.host, event.subject, event.seq)
        self._seen[event.event_id] = None
        if len(self._seen) > self.max_ids:
            self._seen.popitem(last=False)
        key = (event.host, event.subject)
        self._last_seq[key] = max(event.seq, self._last_seq.get(key, event.seq))
