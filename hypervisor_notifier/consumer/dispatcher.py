"""The consumer's decisions, without a broker: decode, verify, filter, order, call back, decide.

:class:`Dispatcher` takes a message body and returns what to do with the
message (:class:`Decision`); the AMQP loop (:class:`~hypervisor_notifier.
consumer.subscriber.Subscriber`) only applies it. The Subscriber and the
nova adapter share it, and its tests feed it bodies.
"""

from __future__ import annotations

import collections
import dataclasses
import enum
import logging
from collections.abc import Callable

from hypervisor_notifier import wire
from hypervisor_notifier.consumer.ordering import EventFilter, Verdict
from hypervisor_notifier.consumer.state import ConsumerState
from hypervisor_notifier.events import LifecycleEvent, MalformedEvent
from hypervisor_notifier.faults import FaultEvent
from hypervisor_notifier.host_events import HostEvent
from hypervisor_notifier.signing import Replayed, Unverified, Verifier
from hypervisor_notifier.wire import WireEvent

LOG = logging.getLogger(__name__)

EventCallback = Callable[[LifecycleEvent], None]
FaultCallback = Callable[[FaultEvent], None]
HostCallback = Callable[[HostEvent], None]


class Decision(enum.Enum):
    """What the AMQP loop does with a message."""

    #: Handled, or nothing to do (a duplicate, a stale event): remove it.
    ACK = "ack"
    #: Refused for good (malformed, unverified, replayed, another host's,
    #: given up): remove it without requeue (dead-lettered if the queue has a
    #: dead-letter exchange).
    REJECT = "reject"
    #: The callback failed: drop the connection, so the broker requeues this
    #: message and every one after it, in their order; consume again after a
    #: backoff.
    REDELIVER = "redeliver"
    #: Arrived after a REDELIVER, before the connection closed: leave it
    #: unacked (it is requeued, in order, with the one that failed).
    LEAVE = "leave"


@dataclasses.dataclass
class SubscriberStats:
    """What a subscriber did with the messages it received."""

    received: int = 0
    delivered: int = 0
    duplicates: int = 0
    stale: int = 0
    malformed: int = 0
    retried: int = 0
    failed: int = 0
    #: With a verifier: unsigned, forged or signed with an unknown key.
    unverified: int = 0
    #: With a verifier: delivered before (in this process or, with a state
    #: file, before a restart), or outside the time window.
    replayed: int = 0
    #: A host's subscriber: events naming another host (misrouted or forged).
    other_host: int = 0
    #: Fault or host events with no callback for their kind: acked, not delivered.
    skipped: int = 0


def _rejection(exc: MalformedEvent) -> str:
    """The :class:`SubscriberStats` counter of a refused message."""
    # Most specific first: a Replayed is an Unverified is a MalformedEvent.
    if isinstance(exc, Replayed):
        return "replayed"
    if isinstance(exc, Unverified):
        return "unverified"
    return "malformed"


class Dispatcher:
    """Judge each message body and hand the events that pass to ``callback``.

    In order: decode (and, with a verifier, check the signature and the
    time window); refuse another host's event (a host's subscriber);
    judge against what was delivered before (:class:`EventFilter`: a
    duplicate or a stale event is acked, not delivered; with a verifier a
    duplicate is a replay, refused); call back; record the delivery.
    Not thread-safe: one consumer thread calls :meth:`dispatch`.

    Arguments:
        callback: The application's, called with each lifecycle event that passes.
        on_fault: Called with each guest fault event that passes; None: they
            are acked and counted ``skipped``.
        on_host: Called with each host event that passes; None: the same.
        host: Refuse events naming another host; None: every host's pass.
        verifier: Pass only events it verifies; None: unsigned events pass.
        max_attempts: Callback failures after which an event is given up.
        dedupe_size: How many delivered event_ids to remember.
        state: Where deliveries are recorded so the memory survives a
            restart; None: in memory only.
        queue_name: Named in log lines.

    """

    def __init__(
        self,
        callback: EventCallback,
        *,
        on_fault: FaultCallback | None = None,
        on_host: HostCallback | None = None,
        host: str | None = None,
        verifier: Verifier | None = None,
        max_attempts: int = 5,
        dedupe_size: int = 100_000,
        state: ConsumerState | None = None,
        queue_name: str = "",
    ) -> None:
        self.callback = callback
        self._callbacks: dict[type, Callable[..., None] | None] = {
            LifecycleEvent: callback,
            FaultEvent: on_fault,
            HostEvent: on_host,
        }
        self.host = host
        self.verifier = verifier
        self.max_attempts = max_attempts
        self.queue_name = queue_name
        self.stats = SubscriberStats()
        self.filter = EventFilter(dedupe_size, state)
        self._attempts: collections.Counter[str] = collections.Counter()
        self._redelivering = False

    def resume(self) -> None:
        """The loop consumes again (after a REDELIVER): judge messages anew."""
        self._redelivering = False

    def dispatch(self, body: bytes | str) -> Decision:
        """Judge one message body, call back if it passes; return what to do with the message."""
        if self._redelivering:
            return Decision.LEAVE
        self.stats.received += 1
        try:
            event = wire.decode(body, self.verifier)
        except MalformedEvent as exc:
            return self._refuse(_rejection(exc), str(exc))
        if self.host is not None and event.host != self.host:
            # The routing key matched this host's queue, the payload names
            # another host: misrouted, or forged; never acted on here.
            return self._refuse(
                "other_host",
                f"event {event.event_id} names host {event.host!r}, not {self.host!r}",
            )
        callback = self._callbacks[type(event)]
        if callback is None:
            # A kind this application did not ask for (a per-guest consumer and a
            # host event): not an error, and not delivered.
            self.stats.skipped += 1
            return Decision.ACK
        verdict = self.filter.verdict(event)
        if verdict is Verdict.DUPLICATE:
            if self.verifier is not None:
                # Delivered before (before a restart, if the verifier forgot).
                return self._refuse("replayed", f"event {event.event_id} was delivered before")
            self.stats.duplicates += 1
            return Decision.ACK
        if verdict is Verdict.STALE:
            self.stats.stale += 1
            LOG.warning("dropped stale event %s (seq %d) of %r", event.event_id, event.seq,
                        event.subject)  # fmt: skip
            return Decision.ACK
        return self._call_back(callback, event)

    def _refuse(self, counter: str, reason: str) -> Decision:
        setattr(self.stats, counter, getattr(self.stats, counter) + 1)
        LOG.warning("rejected a message on %r (%s): %s", self.queue_name, counter, reason)
        return Decision.REJECT

    def _call_back(self, callback: Callable[..., None], event: WireEvent) -> Decision:
        try:
            callback(event)
        except Exception:  # the application's failure, whatever it is: retry, then give up
            return self._callback_failed(event)
        self._attempts.pop(event.event_id, None)
        self.filter.delivered(event)
        if self.verifier is not None:
            self.verifier.remember(event)
        self.stats.delivered += 1
        return Decision.ACK

    def _callback_failed(self, event: WireEvent) -> Decision:
        self._attempts[event.event_id] += 1
        attempts = self._attempts[event.event_id]
        if attempts >= self.max_attempts:
            del self._attempts[event.event_id]
            self.stats.failed += 1
            LOG.exception("giving up event %s after %d failed attempts", event.event_id, attempts)
            return Decision.REJECT
        self.stats.retried += 1
        LOG.warning(
            "callback failed for event %s (attempt %d of %d); redelivering",
            event.event_id,
            attempts,
            self.max_attempts,
            exc_info=True,
        )
        self._redelivering = True
        return Decision.REDELIVER
