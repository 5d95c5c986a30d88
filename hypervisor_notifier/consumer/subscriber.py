"""Subscriber: hand each lifecycle event on the bus to an application callback.

The AMQP side is kombu's :class:`~kombu.mixins.ConsumerMixin`: its hooks
(``on_connection_error``, ``on_consume_ready``...), kombu's failover over
the transport URL's hosts and its ``ensure_connection``. What happens to
each message is decided by the broker-free
:class:`~hypervisor_notifier.consumer.dispatcher.Dispatcher`; the loop
only applies the decision.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
import uuid
from typing import Any

import amqp.exceptions
import kombu
import kombu.exceptions
import kombu.mixins
import kombu.transport.pyamqp

from hypervisor_notifier import wire
from hypervisor_notifier.backoff import Backoff
from hypervisor_notifier.consumer.acks import AckBatch
from hypervisor_notifier.consumer.dispatcher import (
    Decision,
    Dispatcher,
    EventCallback,
    FaultCallback,
    HostCallback,
    SubscriberStats,
)
from hypervisor_notifier.consumer.intake import BulkConsumerMixin, RawConsumer
from hypervisor_notifier.consumer.state import ConsumerState
from hypervisor_notifier.signing import Verifier
from hypervisor_notifier.tls import BrokerAccess, TLSSettings
from hypervisor_notifier.transport_url import TransportURL, describe_error

LOG = logging.getLogger(__name__)

__all__ = ["EventCallback", "Subscriber", "SubscriberStats"]

#: What the loop recovers from by connecting again: kombu's and py-amqp's
#: connection and channel errors (socket and TLS errors are OSErrors).
RECOVERABLE = (
    *kombu.transport.pyamqp.Transport.connection_errors,
    *kombu.transport.pyamqp.Transport.channel_errors,
    kombu.exceptions.OperationalError,
)


class _Redeliver(Exception):
    """The callback failed: drop the connection so the broker requeues, in order."""


class _Stopped(Exception):
    """:meth:`Subscriber.stop` was called while connecting."""


class Subscriber(BulkConsumerMixin):
    """Receive one host's or every host's events: lifecycle, and faults and host events if asked.

    Delivery semantics:

    - **Once, in order.** The callback sees each event once (deduped on
      ``event_id`` among the last ``dedupe_size``), and an instance's events
      in the order its host produced them (an older one arriving late is
      counted ``stale`` and not delivered).
    - **Acked after the callback returns.** If this process dies, the events
      not yet handled stay queued for the next subscriber. Acks go in groups
      (:mod:`~hypervisor_notifier.consumer.acks`): one ``multiple`` ack for
      up to half the prefetch, sent at the latest when the loop turns.
    - **Retry, in order.** If the callback raises, the subscriber closes its
      connection, so the broker requeues that event and every one after it,
      in their order, and consumes again after a backoff. After
      ``max_attempts`` failures the event is rejected (dead-lettered if the
      queue has a dead-letter exchange) and counted ``failed``.
    - **Bad messages do not stop it.** A malformed one is rejected, logged, counted.
    - **Its own host's only.** A host's subscriber rejects an event whose
      payload names another host (misrouted or forged), counted ``other_host``.
    - **Authenticated, with a verifier.** An event not signed by one of the
      verifier's keys is rejected without requeue and counted
      ``unverified``; one delivered before (within the verifier's window:
      a replay, or a publisher's resend), too old or from the future is
      rejected and counted ``replayed``. Neither reaches the callback; what
      reaches it is marked ``event.verified``.
    - **Across restarts, with a state file.** The delivered event_ids and
      each instance's last ``seq`` are kept in ``state_file``
      (:mod:`~hypervisor_notifier.consumer.state`), so a restarted
      subscriber still refuses a replay and a stale event.
    - **Least privilege.** The exchange is declared passively (no configure
      permission needed), and only declared if no publisher has yet.
    - **Never gives up.** kombu fails over between the URL's hosts and
      retries an unreachable broker; a refused login is retried with backoff.

    Arguments:
        transport_url: The broker(s), as an oslo.messaging transport URL.
        callback: Called with each :class:`LifecycleEvent`, one at a time.
        on_fault: The same for guest fault events; None: acked, counted ``skipped``.
        on_host: The same for host events; None: acked, counted ``skipped``.
        host: Receive this host's events (and refuse others'); None: every host's.
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
        ssl_ca_file: TLS (``rabbits://``): the broker's CA(s); None: the system's.
        ssl_cert_file: TLS: a client certificate to present.
        ssl_key_file: TLS: its private key, unless ``ssl_cert_file`` holds it.
        force_tls: TLS even though the URL does not ask for it (oslo.messaging's
            ``[oslo_messaging_rabbit] ssl``); False: as the URL says.
        state_file: Keep the dedupe and order memory in this file; None: in memory.
        connect_timeout: Seconds a TCP (and TLS) connect may take.
        heartbeat: AMQP heartbeat, seconds (0: none).
        retry_interval_start: kombu's first wait after every host failed, seconds.
        retry_interval_step: How much longer each next wait is.
        retry_interval_max: The longest wait.

    """

    #: Seconds before consuming again after a callback failure, doubling up to the maximum.
    retry_backoff_initial = 0.1
    retry_backoff_maximum = 5.0

    def __init__(
        self,
        transport_url: str,
        callback: EventCallback,
        *,
        on_fault: FaultCallback | None = None,
        on_host: HostCallback | None = None,
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
        force_tls: bool = False,
        state_file: str | None = None,
        connect_timeout: float = 5.0,
        heartbeat: float = 30.0,
        retry_interval_start: float = 1.0,
        retry_interval_step: float = 2.0,
        retry_interval_max: float = 30.0,
    ) -> None:
        if host is None and queue is None and not exclusive:
            raise ValueError("subscribing to every host needs a queue name, or exclusive=True")
        url = TransportURL.parse(transport_url)
        tls = TLSSettings(ssl_ca_file, ssl_cert_file, ssl_key_file)
        tls.check()
        self.access = BrokerAccess(dataclasses.replace(url, tls=True) if force_tls else url, tls)
        self.verifier = verifier
        self.callback = callback
        self.host = host
        #: The publishers' names and queue type: the same value they publish with.
        self.topology = wire.Topology(exchange, topic, queue_type)
        self.binding_key = self.topology.binding_key(host)
        if exclusive:
            self.queue_name = queue or f"{topic}.subscriber.{uuid.uuid4().hex[:12]}"
        else:
            self.queue_name = queue or self.topology.host_queue(host or "")
        self.exclusive = exclusive
        self.prefetch_count = prefetch_count
        self.poll_interval = poll_interval
        self.connect_timeout = connect_timeout
        self.heartbeat = heartbeat
        self.retry_intervals = (retry_interval_start, retry_interval_step, retry_interval_max)
        self.state = ConsumerState(state_file, dedupe_size) if state_file else None
        self.dispatcher = Dispatcher(
            callback,
            on_fault=on_fault,
            on_host=on_host,
            host=host,
            verifier=verifier,
            max_attempts=max_attempts,
            dedupe_size=dedupe_size,
            state=self.state,
            queue_name=self.queue_name,
        )
        self.stats = self.dispatcher.stats
        # Half the prefetch: the broker never waits for acks to send more.
        self._acks = AckBatch(prefetch_count // 2)
        self._ssl: dict[str, Any] | None = None
        self._host_index = 0
        self._stopping = threading.Event()
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None

    # -- the public face --------------------------------------------------------

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

    @property
    def url(self) -> TransportURL:
        """The broker(s) it consumes from."""
        return self.access.url

    @property
    def should_stop(self) -> bool:  # type: ignore[override]
        """ConsumerMixin's stop flag: :meth:`stop` was called."""
        return self._stopping.is_set()

    def run(self, _tokens: int = 1, **kwargs: Any) -> None:
        """Consume until :meth:`stop`, reconnecting whenever needed (blocking)."""
        retry_backoff = Backoff(self.retry_backoff_initial, self.retry_backoff_maximum)
        refused_backoff = Backoff(maximum=self.retry_intervals[2])
        try:
            while not self.should_stop:
                try:
                    for _ in self.consume(safety_interval=self.poll_interval):
                        refused_backoff.reset()
                    retry_backoff.reset()
                except _Redeliver:
                    self._stopping.wait(retry_backoff.next())
                except _Stopped:
                    break
                except RECOVERABLE as exc:
                    # What kombu does not retry itself (a refused login, a lost
                    # connection while consuming): connect again after a backoff.
                    self.on_connection_error(exc, refused_backoff.next(), wait=True)
        finally:
            self._ready.clear()
            if self.state is not None:
                self.state.close()

    # -- kombu's ConsumerMixin hooks ----------------------------------------------

    def create_connection(self) -> kombu.Connection:
        """A new connection to the URL's hosts, in order (kombu fails over between them)."""
        self._host_index = 0
        self._ssl = self.access.amqp_ssl(self.url.hosts[0]) or None
        return kombu.Connection(
            self.url.kombu_urls(),
            ssl=self._ssl if self._ssl is not None else False,
            connect_timeout=self.connect_timeout,
            heartbeat=self.heartbeat,
            failover_strategy="round-robin",
        )

    @contextlib.contextmanager
    def establish_connection(self) -> Any:
        """ConsumerMixin's, retried with this subscriber's intervals and stop request."""
        start, step, maximum = self.retry_intervals
        with self.create_connection() as connection:
            connection.ensure_connection(
                self.on_connection_error,
                self.connect_max_retries,
                interval_start=start,
                interval_step=step,
                interval_max=maximum,
                callback=self._check_stop,
            )
            yield connection

    def get_consumers(self, Consumer: Any, channel: Any) -> list[kombu.Consumer]:
        """The one consumer of the queue, its exchange checked first."""
        self._ensure_exchange(channel.connection)
        exchange = kombu.Exchange(
            self.topology.exchange, type="topic", durable=True, auto_delete=False, passive=True
        )
        queue = kombu.Queue(
            self.queue_name,
            exchange,
            routing_key=self.binding_key,
            durable=not self.exclusive,
            exclusive=self.exclusive,
            auto_delete=self.exclusive,
            queue_arguments=None if self.exclusive else self.topology.queue_arguments,
        )
        return [
            RawConsumer(
                channel,
                queues=[queue],
                on_delivery=self._on_delivery,
                prefetch_count=self.prefetch_count,
                no_ack=False,
                on_decode_error=self.on_decode_error,
            )
        ]

    def on_consume_ready(
        self, connection: Any, channel: Any, consumers: Any, **kwargs: Any
    ) -> None:
        """Consuming: messages are judged anew; :meth:`wait_ready` returns."""
        # Tags of an earlier channel mean nothing on this one: never ack them here.
        self._acks.forget()
        self.dispatcher.resume()
        self._ready.set()
        LOG.info(
            "subscribed to %s: queue %r bound to %r",
            self.url.masked(),
            self.queue_name,
            self.binding_key,
        )

    def on_consume_end(self, connection: Any, channel: Any) -> None:
        """Not consuming any more: what was handled is acked while the channel still is."""
        with contextlib.suppress(*RECOVERABLE):
            self._acks.flush()
        self._acks.forget()
        self._ready.clear()

    def on_iteration(self) -> None:
        """Each turn of the loop: ack what was handled if no message waits to be read."""
        if self._acks.pending and not self.message_waiting():
            self._acks.flush()
        else:
            self._acks.due()

    def on_connection_error(self, exc: BaseException, interval: float, wait: bool = False) -> None:
        """One line per failed attempt (masked); with ``wait``, wait ``interval`` (or a stop).

        Called by kombu's ``ensure_connection`` before it moves on to the
        URL's next host (round-robin): the certificate is then checked
        against that host's name (kombu's own ``server_hostname=None``
        would check ``localhost``'s against 127.0.0.1).
        """
        self._ready.clear()
        LOG.warning(
            "subscriber to %s: %s; retrying in %.1f s",
            self.url.masked(),
            describe_error(exc),
            interval,
        )
        if wait:
            self._stopping.wait(interval)
            return
        self._host_index = (self._host_index + 1) % len(self.url.hosts)
        if self._ssl is not None:
            self._ssl["server_hostname"] = self.url.hosts[self._host_index].hostname

    def _check_stop(self) -> None:
        if self.should_stop:
            raise _Stopped

    def _ensure_exchange(self, connection: amqp.Connection) -> None:
        """Check the exchange exists; declare it only if not (needs configure permission)."""
        exchange = self.topology.exchange
        channel = connection.channel()
        try:
            channel.exchange_declare(exchange, "topic", passive=True)
        except amqp.exceptions.NotFound:
            # The broker closed that channel. No publisher has run yet.
            channel = connection.channel()
            channel.exchange_declare(exchange, "topic", durable=True, auto_delete=False)
            LOG.info("declared exchange %r: no publisher had yet", exchange)
        finally:
            channel.close()

    def _on_message(self, message: amqp.Message) -> None:
        self._on_delivery(message.channel, message.delivery_info["delivery_tag"], message.body)

    def _on_delivery(self, channel: amqp.Channel, delivery_tag: int, body: bytes | str) -> None:
        decision = self.dispatcher.dispatch(body)
        if decision is Decision.ACK:
            self._acks.handled(channel, delivery_tag)
            return
        # Never let a later multiple ack cover what was not handled.
        self._acks.flush()
        if decision is Decision.REJECT:
            channel.basic_reject(delivery_tag, requeue=False)
        elif decision is Decision.REDELIVER:
            raise _Redeliver
        # LEAVE: unacked, requeued in order when the connection closes.
