"""Which published entries the broker confirmed: delivery-tag bookkeeping, no I/O.

RabbitMQ numbers the messages of a confirm-mode channel 1, 2, 3... and
answers each tag exactly once: ``basic.ack`` (the message is in every queue
it was routed to) or ``basic.nack`` (it is not: a full queue with
``overflow: reject-publish``, a quorum queue without a leader, an internal
error). ``multiple=true`` covers every tag up to N *not answered yet*: a tag
nacked before is never confirmed by a later multiple ack. A message
published with ``mandatory`` that no queue takes comes back as
``basic.return`` (matched here by its ``message_id``, the event's id)
*before* its ack: that ack does not confirm it.

Rules kept by :class:`ConfirmTracker`:

- An entry is confirmed (leaves the outbox) only when its own tag was acked
  and it was not returned.
- A nacked or returned entry is kept for a resend on the same connection
  (after a backoff the publisher chooses); a lost connection forgets every
  tag (the outbox sends every unconfirmed entry again after reconnecting).
- Order per instance: resends go out oldest first, and the publisher takes
  nothing new from the outbox while any resend is unconfirmed, so no later
  event overtakes a resent one. Only the messages already in flight when a
  nack arrives can overtake it: when one of them (a later event of the same
  instance) is acked while an earlier one of its instance waits for its
  resend, it is not confirmed either but sent again after it. The last
  message of an instance in the queue is then always its latest event: a
  consumer that drops stale events (an older ``seq``) sees the older one as
  stale and the later one again (a duplicate ``event_id``), a consumer that
  does not sees the events in order at the end.
"""

from __future__ import annotations

import collections

from hypervisor_notifier.notifier.outbox import Entry


class ConfirmTracker:
    """Delivery tags of one channel, and the entries waiting to be sent again.

    Not thread-safe: the publisher thread alone uses it.
    """

    def __init__(self) -> None:
        self._clear()

    def _clear(self) -> None:
        self._next_tag = 1
        # Tags in increasing order: a multiple ack pops from the head, O(1) each.
        self._inflight: collections.OrderedDict[int, Entry] = collections.OrderedDict()
        self._tags: dict[str, int] = {}  # event_id -> tag, to match a basic.return
        self._returned: set[int] = set()
        self._waiting: list[Entry] = []  # refused: to be sent again
        # Entries refused at least once and not confirmed yet, per instance.
        self._retrying: dict[str, set[int]] = {}

    @property
    def in_flight(self) -> int:
        """Messages published and not answered yet."""
        return len(self._inflight)

    @property
    def retrying(self) -> bool:
        """True while a refused entry is not confirmed yet (waiting, or resent and in flight)."""
        return bool(self._retrying)

    @property
    def waiting(self) -> int:
        """Refused entries not sent again yet."""
        return len(self._waiting)

    def sent(self, entry: Entry) -> int:
        """Note that ``entry`` was published; return its delivery tag."""
        tag = self._next_tag
        self._next_tag += 1
        self._inflight[tag] = entry
        self._tags[entry.event.event_id] = tag
        return tag

    def returned(self, event_id: str) -> Entry | None:
        """The broker returned the message of ``event_id``: its entry (None if not in flight)."""
        tag = self._tags.get(event_id)
        if tag is None:
            return None
        self._returned.add(tag)
        return self._inflight[tag]

    def acked(self, tag: int, multiple: bool) -> list[Entry]:
        """Handle a ``basic.ack``; return the entries it confirms, oldest first."""
        answered = self._answered(tag, multiple)
        if not self._retrying and not any(returned for _entry, returned in answered):
            # Nothing refused is pending (the usual case): each answered entry is confirmed.
            return [entry for entry, _returned in answered]
        confirmed = []
        for entry, returned in answered:
            if returned or self._behind_a_resend(entry):
                self._refuse(entry)
            else:
                confirmed.append(entry)
                self._forget_refusal(entry)
        return confirmed

    def nacked(self, tag: int, multiple: bool) -> int:
        """Handle a ``basic.nack``; return how many entries it refused."""
        refused = self._answered(tag, multiple)
        for entry, _returned in refused:
            self._refuse(entry)
        return len(refused)

    def take_resends(self, limit: int) -> list[Entry]:
        """Up to ``limit`` refused entries to publish again, oldest first."""
        self._waiting.sort(key=lambda entry: entry.entry_id)
        taken, self._waiting = self._waiting[:limit], self._waiting[limit:]
        return taken

    def reset(self) -> int:
        """Forget every tag (the channel is gone); return how many entries were unconfirmed."""
        unconfirmed = len(self._inflight) + len(self._waiting)
        self._clear()
        return unconfirmed

    def _answered(self, tag: int, multiple: bool) -> list[tuple[Entry, bool]]:
        """Forget the tags an ack or nack of ``tag`` answers: their (entry, returned) pairs."""
        if multiple:
            tags = []
            for tag_ in self._inflight:
                if tag_ > tag:
                    break
                tags.append(tag_)
        else:
            tags = [tag] if tag in self._inflight else []
        answered = []
        for tag_ in tags:
            entry = self._inflight.pop(tag_)
            # Only its own: two entries of one event_id (a resend of a copy) have two tags.
            if self._tags.get(entry.event.event_id) == tag_:
                del self._tags[entry.event.event_id]
            answered.append((entry, tag_ in self._returned))
            self._returned.discard(tag_)
        return answered

    def _behind_a_resend(self, entry: Entry) -> bool:
        earlier = self._retrying.get(entry.event.subject, ())
        return any(entry_id < entry.entry_id for entry_id in earlier)

    def _refuse(self, entry: Entry) -> None:
        self._waiting.append(entry)
        self._retrying.setdefault(entry.event.subject, set()).add(entry.entry_id)

    def _forget_refusal(self, entry: Entry) -> None:
        uuid = entry.event.subject
        ids = self._retrying.get(uuid)
        if ids is not None:
            ids.discard(entry.entry_id)
            if not ids:
                del self._retrying[uuid]
