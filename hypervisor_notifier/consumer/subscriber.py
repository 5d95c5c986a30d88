"""Subscriber: hand each lifecycle event on the bus to an application callback."""

from __future__ import annotations

import collections
import dataclasses
import logging
import threading
import uuid
from collections.abc import Callable

import amqp.exceptions
import kombu
import kombu.message

from hypervisor_notifier import wire
from hypervisor_notifier.backoff import Backoff
from hypervisor_notifier.consumer.ordering import EventFilter, Verdict
from hypervisor_notifier.events import LifecycleEvent, MalformedEvent
from hypervisor_notifier.signing import Replayed, Unverified, Verifier
from hypervisor_notifier.tls import TLSSettings
from hypervisor_notifier.transport_url import TransportURL, describe_error

LOG = logging.getLogger(__name__)

EventCallback = Callable[[LifecycleEvent], None]


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
    #: With a verifier: delivered before, or outside the time window.
    replayed: int = 0


def _rejection(exc: MalformedEvent) -> str:
    """The :class:`SubscriberStats` counter of a refused message."""
    # Most specific first: a Replayed is an Unverified is a MalformedEvent.
    if isinstance(exc, Replayed):
        return "replayed"
    if isinstance(exc, Unverified):
        return "unverified"
    return "malformed"


class _Redeliver(Exception):
    """The callback failed: drop the connection so the broker requeues, in order."""


class Subscriber:
    """Receive one host's or every host's lifecycle events.

    Delivery semantics:

    - **Once, in order.** The callback sees each event once (deduped on
      ``event_id`` among the last ``dedupe_size``), and an instance's events
      in the order its host produced them (an older one arriving late is
      counted ``stale`` and not delivered).
    - **Acked after the callback returns.** If this process dies, the events
      not yet handled stay queued for the next subscriber.
    - **Retry, in order.** If the callback raises, the subscriber closes its
      connection, so the broker requeues that event and every one after it,
      in their order, and consumes again after a backoff. After
      ``max_attempts`` failures the event is rejected (dead-lettered if the
      queue has a dead-letter exchange) and counted ``failed``.
    - **Bad messages do not stop it.** A malformed message is rejected
      without requeue, logged and counted ``malformed``.
    - **Authenticated, with a verifier.** An event not signed by one of the
      verifier's keys is rejected without requeue and counted
      ``unverified``; one delivered before (within the verifier's window:
      a replay, or a publisher's resend), too old or from the future is
      rejected and counted ``replayed``. Neither reaches the callback; what
      reaches it is marked ``event.verified``.
    - **Least privilege.** The exchange is declared passively, so the
      consumer's broker user needs no configure permission on it; only if
      no publisher has declared it yet does the subscriber try to declare it.
    - **Never gives up.** An unreachable broker is retried with backoff.

    Arguments:
        transport_url: The broker(s), as an oslo.messaging transport URL.
        callback: Called with each :class:`LifecycleEvent`, from the
            subscriber's thread, one at a time.
        host: Receive this host's events; None for every host's.
        exchange: The publishers' exchange (``[publisher] exchange``).
        topic: The publishers' topic (``[publisher] topic``).
        queue: The durable queue to consume. Default for a host: the per-host
            queue its publisher declares. Every host's events need a name.
        queue_type: ``classic`` or ``quorum``; must match the publisher's.
        exclusive: Consume from a private queue that exists only while the
            subscriber runs (for tools that tail the bus), not a durable one.
        prefetch_count: Unacked messages the broker sends ahead.
        max_attempts: Callback failures after which an event is given up.
        dedupe_size: How many event_ids to remember for dedupe.
        poll_interval: Seconds between checks of a stop request while idle.
        verifier: Accept only events it verifies (see above); None: accept
            unsigned events (``event.verified`` is then always False).
        ssl_ca_file: TLS (``rabbits://``): the CA(s) of the broker's
            certificate; None for the system's CA store.
        ssl_cert_file: TLS: a client certificate to present.
        ssl_key_file: TLS: its private key, unless ``ssl_cert_file`` holds it.

    """

    retry_backoff_initial = 0.1

    def __init__(
        self,
        transport_url: str,
        callback: EventCallback,
        *,
        host: str | None = None,
        exchange: str = "hypervisor",
        topic: str = "hypervisor_events",
        queue: str | None = None,
        queue_type: str = "classic",
        exclusive: bool = False,
        prefetch_count: int = 100,
        max_attempts: int = 5,
        dedupe_size: int = 100_000,
        poll_interval: float = 0.2,
        verifier: Verifier | None = None,
        ssl_ca_file: str | None = None,
        ssl_cert_file: str | None = None,
        ssl_key_file: str | None = None,
    ) -> None:
        if host is None and queue is None and not exclusive:
            raise ValueError("subscribing to every host needs a queue name, or exclusive=True")
        self.url = TransportURL.parse(transport_url)
        self.tls = TLSSettings(ssl_ca_file, ssl_cert_file, ssl_key_file)
        self.tls.check()
        self.verifier = verifier
        self.callback = callback
        self.host = host
        self.exchange = exchange
        self.binding_key = wire.binding_key(topic, host)
        if exclusive:
            self.queue_name = queue or f"{topic}.subscriber.{uuid.uuid4().hex[:12]}"
        else:
            self.queue_name = queue or wire.host_queue_name(topic, host or "")
        self.queue_arguments = wire.queue_arguments(queue_type)
        self.exclusive = exclusive
        self.prefetch_count = prefetch_count
        self.max_attempts = max_attempts
        self.poll_interval = poll_interval
        self.stats = SubscriberStats()
        self._filter = EventFilter(dedupe_size)
        self._attempts: collections.Counter[str] = collections.Counter()
        self._redelivering = False
        self._stopping = threading.Event()
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._url_index = 0

    def start(self) -> None:
        """Consume in a background thread."""
        self._thread = threading.Thread(target=self.run, name="subscriber", daemon=True)
        self._thread.start()

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Wait until the queue is declared, bound and consumed; return whether it is."""
        return self._ready.wait(timeout)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop consuming and wait for the thread; unacked messages are requeued."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def run(self) -> None:
        """Consume until :meth:`stop`, reconnecting whenever needed (blocking)."""
        backoff = Backoff(maximum=30.0)
        retry_backoff = Backoff(initial=self.retry_backoff_initial, maximum=5.0)
        urls = self.url.kombu_urls()
        while not self._stopping.is_set():
            index = self._url_index % len(urls)
            tls = self.tls.amqp_ssl(self.url.hosts[index].hostname) if self.url.tls else False
            try:
                with kombu.Connection(
                    urls[index], connect_timeout=5, heartbeat=30, ssl=tls
                ) as connection:
                    connection.connect()
                    backoff.reset()
                    self._consume(connection)
                retry_backoff.reset()
            except _Redeliver:
                self._stopping.wait(retry_backoff.next())
            except Exception as exc:  # any failure: reconnect, never let the thread die
                self._ready.clear()
                self._url_index += 1
                delay = backoff.next()
                LOG.warning(
                    "subscriber to %s: %s; retrying in %.1f s",
                    self.url.masked(),
                    describe_error(exc),
                    delay,
                )
                self._stopping.wait(delay)

    def _ensure_exchange(self, connection: kombu.Connection) -> None:
        """Check the exchange exists; declare it only if not (needs configure permission)."""
        channel = connection.channel()
        try:
            channel.exchange_declare(self.exchange, "topic", passive=True)
        except amqp.exceptions.NotFound:
            # The broker closed that channel. No publisher has run yet.
            channel = connection.channel()
            channel.exchange_declare(self.exchange, "topic", durable=True, auto_delete=False)
            LOG.info("declared exchange %r: no publisher had yet", self.exchange)
        finally:
            channel.close()

    def _consume(self, connection: kombu.Connection) -> None:
        self._ensure_exchange(connection)
        exchange = kombu.Exchange(
            self.exchange, type="topic", durable=True, auto_delete=False, passive=True
        )
        queue = kombu.Queue(
            self.queue_name,
            exchange,
            routing_key=self.binding_key,
            durable=not self.exclusive,
            exclusive=self.exclusive,
            auto_delete=self.exclusive,
            queue_arguments=None if self.exclusive else self.queue_arguments,
        )
        channel = connection.channel()
        consumer = kombu.Consumer(
            channel,
            queues=[queue],
            on_message=self._on_message,
            prefetch_count=self.prefetch_count,
            no_ack=False,
        )
        with consumer:
            self._redelivering = False
            self._ready.set()
            LOG.info(
                "subscribed to %s: queue %r bound to %r",
                self.url.masked(),
                self.queue_name,
                self.binding_key,
            )
            while not self._stopping.is_set():
                try:
                    connection.drain_events(timeout=self.poll_interval)
                except TimeoutError:
                    connection.heartbeat_check()

    def _on_message(self, message: kombu.message.Message) -> None:
        if self._redelivering:
            # Not acked: requeued, in order, when the connection closes.
            return
        self.stats.received += 1
        try:
            event = wire.decode(message.body, self.verifier)
        except MalformedEvent as exc:
            kind = _rejection(exc)
            setattr(self.stats, kind, getattr(self.stats, kind) + 1)
            LOG.warning("rejected a message on %r (%s): %s", self.queue_name, kind, exc)
            message.reject(requeue=False)
            return
        verdict = self._filter.verdict(event)
        if verdict is not Verdict.DELIVER:
            if verdict is Verdict.DUPLICATE:
                self.stats.duplicates += 1
            else:
                self.stats.stale += 1
                LOG.warning("dropped stale event %s (seq %d) of %s", event.event_id, event.seq,
                            event.instance_uuid)  # fmt: skip
            message.ack()
            return
        try:
            self.callback(event)
        except Exception:
            self._callback_failed(event, message)
            return
        self._attempts.pop(event.event_id, None)
        self._filter.delivered(event)
        if self.verifier is not None:
            self.verifier.remember(event)
        self.stats.delivered += 1
        message.ack()

    def _callback_failed(self, event: LifecycleEvent, message: kombu.message.Message) -> None:
        self._attempts[event.event_id] += 1
        attempts = self._attempts[event.event_id]
        if attempts >= self.max_attempts:
            del self._attempts[event.event_id]
            self.stats.failed += 1
            LOG.exception("giving up event %s after %d failed attempts", event.event_id, attempts)
            message.reject(requeue=False)
            return
        self.stats.retried += 1
        LOG.warning(
            "callback failed for event %s (attempt %d of %d); redelivering",
            event.event_id,
            attempts,
            self.max_attempts,
            exc_info=True,
        )
        self._redelivering = True
        raise _Redeliver(event.event_id)
