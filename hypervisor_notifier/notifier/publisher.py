"""AMQP publisher with pipelined publisher confirms.

Delivery semantics:

- **At least once.** An entry leaves the outbox only when the broker acked
  its own delivery tag (see :mod:`~hypervisor_notifier.notifier.confirms`).
  A nacked entry (a full queue with ``overflow: reject-publish``...) is sent
  again on the same connection after a backoff; a lost connection or a
  missed heartbeat sends every unconfirmed entry again after reconnecting,
  oldest first. Consumers dedupe on ``event_id``.
- **Never into nowhere.** Messages are published ``mandatory``: one that no
  queue takes (the host queue was deleted) comes back as ``basic.return``;
  the publisher declares the host queue and its binding again and resends
  it. With ``declare_host_queue = false`` the publisher binds nothing: the
  events wait in the outbox, resent with backoff, until a queue is bound to
  the routing key (``/healthz`` says so meanwhile).
- **In order per instance.** Resends go out oldest first and nothing new is
  taken from the outbox until they are confirmed (the confirms module says
  how an event already in flight is kept from overtaking).
- **Pipelined.** Up to ``confirm_window`` messages are unconfirmed at once;
  acks are read as they arrive, not one round trip per message, and the
  entries of the acks read together leave the outbox in one transaction.
  The messages taken together are written at once (frames: ``publishframes``).
- **Persistent and routed.** Messages are persistent (delivery mode 2), on
  a durable topic exchange; the durable per-host queue is declared (and
  bound) before anything is published, so events wait for their consumer.
- **Never gives up.** An unreachable or refusing broker (or one whose TLS
  certificate is not trusted) is retried with backoff and jitter, failing
  over between the URL's hosts; each failed attempt is logged in one line,
  without the password. A broker that blocks publishers (a memory or disk
  alarm) is waited for: nothing is written until it unblocks the
  connection, and the events wait in the outbox.

One thread (``publisher``) owns the connection: py-amqp is not thread-safe.
It waits (``poll``) on the broker socket and the outbox's wake
descriptor, so a new event is published as soon as it is put. With TLS,
bytes OpenSSL already decrypted are not on the socket any more: the pump
handles them before it waits (``SSLSocket.pending``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import amqp
from oslo_config import cfg

from hypervisor_notifier import wire
from hypervisor_notifier.backoff import Backoff
from hypervisor_notifier.fdwait import readable
from hypervisor_notifier.notifier import broker
from hypervisor_notifier.notifier.amqpio import (
    CONNECTION_ERRORS,
    declare_bound_queue,
    drain,
    open_connection,
    publish,
    tls_pending,
)
from hypervisor_notifier.notifier.confirms import ConfirmTracker
from hypervisor_notifier.notifier.framewriter import FrameWriterFactory
from hypervisor_notifier.notifier.outbox import Entry, Outbox
from hypervisor_notifier.notifier.refusals import Refusals
from hypervisor_notifier.tls import BrokerAccess
from hypervisor_notifier.transport_url import BrokerHost, describe_error

LOG = logging.getLogger(__name__)


class Publisher:
    """Publish outbox entries to the exchange with routing key ``<topic>.<host>.info``.

    Arguments:
        outbox: Where entries wait; they leave it once confirmed.
        access: The broker(s) to publish to, and the TLS files.
        host: This compute host: the routing key and per-host queue name.
        topology: The exchange, the topic and the per-host queue's type.
        declare_host_queue: Declare and bind the durable per-host queue.
        confirm_window: Most messages unconfirmed at once.
        heartbeat: AMQP heartbeat in seconds (0: none).
        connect_timeout: Seconds allowed to open a connection (and to write).
        reconnect_interval_max: Largest backoff delay between connection attempts.
        history: A stream that also receives this host's events: its name and
            x-arguments (``wire.stream_arguments``); None: none.

    """

    def __init__(
        self,
        outbox: Outbox,
        *,
        access: BrokerAccess,
        host: str,
        topology: wire.Topology,
        declare_host_queue: bool = True,
        confirm_window: int = 256,
        heartbeat: int = 30,
        connect_timeout: float = 5.0,
        reconnect_interval_max: float = 30.0,
        history: tuple[str, dict[str, Any]] | None = None,
    ) -> None:
        self.outbox = outbox
        self.access = access
        self.host = host
        self.topology = topology
        self.routing_key = topology.routing_key(host)
        self.queue_name = topology.host_queue(host) if declare_host_queue else None
        self.confirm_window = confirm_window
        self.heartbeat = heartbeat
        self.connect_timeout = connect_timeout
        self.backoff = Backoff(maximum=reconnect_interval_max)
        self.history = history
        #: Counters, for logs and metrics.
        self.published = 0
        self.confirmed = 0
        #: Events sent again after a nack, a return or a lost connection.
        self.resent = 0
        #: Refused (nacked, returned) events: counts, resend timing, report.
        self.refusals = Refusals(reconnect_interval_max)
        #: Connections to the broker made after the first one.
        self.reconnects = 0
        #: Why the publisher is not publishing now (None while it is).
        self.problem: str | None = "not connected yet"
        #: Called with each confirmed event's seconds from outbox to confirm.
        self.observe_latency: Callable[[float], None] = lambda _seconds: None
        self._blocked = False
        self._frames = FrameWriterFactory()
        self._connection: amqp.Connection | None = None
        self._channel: amqp.Channel | None = None
        self._tracker = ConfirmTracker()
        #: Entries whose own tag was acked, not removed from the outbox yet.
        self._acked: list[Entry] = []
        self._redeclare: set[str] = set()  # hosts whose queue a return showed missing
        self._connections = 0
        self._host_index = 0
        self._stop_requested = threading.Event()
        self._wakeup = threading.Event()
        self._deadline = float("inf")
        self._thread: threading.Thread | None = None

    @classmethod
    def from_conf(cls, conf: cfg.ConfigOpts, outbox: Outbox) -> Publisher:
        """Build a publisher from the configuration (:func:`broker.publisher_arguments`)."""
        return cls(outbox, **broker.publisher_arguments(conf))

    @property
    def alive(self) -> bool:
        """True while the publisher thread runs (the watchdog asks)."""
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Start the publisher thread."""
        self._thread = threading.Thread(target=self._run, name="publisher", daemon=True)
        self._thread.start()

    def stop(self, timeout: float) -> int:
        """Publish what is in the outbox, wait at most ``timeout`` s for confirms, stop.

        Returns the number of events left unconfirmed (0 when all were confirmed).
        """
        self._deadline = time.monotonic() + timeout
        self._stop_requested.set()
        self._wakeup.set()
        self.outbox.wake()
        if self._thread is not None:
            self._thread.join(timeout + self.connect_timeout + 1)
        return len(self.outbox)

    # -- publisher thread ------------------------------------------------------

    def _run(self) -> None:
        while not self._finished():
            if self._connection is None and not self._connect():
                self._pause()
                continue
            try:
                self._pump()
                continue
            except CONNECTION_ERRORS as exc:
                self.problem = f"lost broker {self._broker_name()}: {describe_error(exc)}"
                LOG.warning("%s; %d events kept, reconnecting", self.problem, len(self.outbox))
            except Exception as exc:
                # A bug must not kill the only thread publishing: start over.
                self.problem = f"publisher failed: {type(exc).__name__}"
                LOG.exception("publisher failed; %d events kept, reconnecting", len(self.outbox))
            self._disconnect(graceful=False)
            # Also after a connection that worked: no reconnect storm against a
            # broker that accepts connections and then fails. A confirm resets it.
            self._pause()
        self._disconnect(graceful=True)

    def _pause(self) -> None:
        """Wait the next backoff delay (cut short once by a stop request, or by its deadline)."""
        self._wakeup.wait(min(self.backoff.next(), self._time_left()))
        self._wakeup.clear()

    def _finished(self) -> bool:
        if not self._stop_requested.is_set():
            return False
        return len(self.outbox) == 0 or self._time_left() <= 0

    def _time_left(self) -> float:
        return max(0.0, self._deadline - time.monotonic())

    def _broker(self) -> BrokerHost:
        """The broker connected to, or tried next: failing over, the URL's next host."""
        return self.access.url.hosts[self._host_index % len(self.access.url.hosts)]

    def _broker_name(self) -> str:
        broker = self._broker()
        return f"{broker.username}@{broker.address}"

    def _connect(self) -> bool:
        connection = open_connection(
            self.access,
            self._broker(),
            name=f"hypervisor-notifier {self.host}",
            timeout=self.connect_timeout,
            heartbeat=self.heartbeat,
            frames=self._frames,
            on_blocked=self._on_blocked,
            on_unblocked=self._on_unblocked,
        )
        try:
            connection.connect()
            channel = connection.channel()
            self._declare(channel)
            channel.confirm_select()
        except CONNECTION_ERRORS as exc:
            connection.collect()
            self.problem = f"cannot publish to broker {self._broker_name()}: {describe_error(exc)}"
            LOG.error("%s; %d events kept, retrying", self.problem, len(self.outbox))
            # Fail over: the next attempt goes to the URL's next host.
            self._host_index += 1
            return False
        channel.events["basic_ack"].add(self._on_ack)
        channel.events["basic_nack"].add(self._on_nack)
        channel.events["basic_return"].add(self._on_return)
        self._connection, self._channel = connection, channel
        self._blocked = False
        self.reconnects += self._connections > 0
        self._connections += 1
        self.problem = None
        LOG.info(
            "connected to broker %s; publishing to exchange %r with routing key %r",
            self._broker_name(),
            self.topology.exchange,
            self.routing_key,
        )
        return True

    def _declare(self, channel: amqp.Channel) -> None:
        exchange = self.topology.exchange
        channel.exchange_declare(exchange, "topic", durable=True, auto_delete=False)
        if self.queue_name:
            self._declare_host_queue(channel, self.host)
        if self.history:
            declare_bound_queue(channel, *self.history, exchange, self.routing_key)

    def _declare_host_queue(self, channel: amqp.Channel, host: str) -> None:
        topology = self.topology
        declare_bound_queue(channel, topology.host_queue(host), topology.queue_arguments,
                            topology.exchange, topology.routing_key(host))  # fmt: skip

    def _disconnect(self, *, graceful: bool) -> None:
        connection, self._connection, self._channel = self._connection, None, None
        self._confirm_acked()  # acked before the connection ended: not to be sent again
        unconfirmed = self._tracker.reset()
        if not graceful:
            self.resent += unconfirmed
        self.refusals.forget()
        self._redeclare.clear()
        self.outbox.release_inflight()
        if connection is None:
            return
        if graceful:
            try:
                connection.close()
                return
            except CONNECTION_ERRORS:
                LOG.debug("closing the broker connection failed", exc_info=True)
        # A dead or hung broker never answers a close: drop the socket.
        connection.collect()

    def _pump(self) -> None:
        """Publish what the window allows, then wait for acks or new entries."""
        assert self._connection is not None and self._channel is not None  # noqa: S101
        # A blocked connection is not read by the broker: publishing would hang.
        room = 0 if self._blocked else self.confirm_window - self._tracker.in_flight
        wait_for = [self._connection.sock]
        timeout = self.heartbeat / 4 if self.heartbeat else 5.0
        if room > 0 and self._tracker.retrying:
            # Nothing new until the refused entries are confirmed: order per instance.
            due = self.refusals.seconds_to_resend()
            if due is not None:
                timeout = min(timeout, due)
                if due == 0:
                    self._send(self._tracker.take_resends(room), resend=True)
        elif room > 0:
            self.outbox.clear_wake()
            self._send(self.outbox.take(room))
            wait_for.append(self.outbox.wake_fd)
        if self._stop_requested.is_set():
            if self._finished():
                return  # all confirmed: nothing to wait for (the stop's wake-up was read above)
            timeout = min(timeout, self._time_left())
        # Frames OpenSSL has decrypted already would not wake the wait.
        buffered = tls_pending(self._connection.sock)
        ready = readable(wait_for, 0 if buffered else timeout)
        if buffered or self._connection.sock.fileno() in ready:
            drain(self._connection)
        if self.heartbeat:
            self._connection.heartbeat_tick()
        self._after_refusals(self._channel)
        # The acks read above (a window's worth, often): their deletions in one commit.
        self._confirm_acked()

    def _send(self, batch: list[Entry], *, resend: bool = False) -> None:
        if not batch:
            return
        assert self._channel is not None and self._frames.writer is not None  # noqa: S101
        writer = self._frames.writer
        with writer.batch():
            for entry in batch:
                # The event's own host: events recovered from the outbox keep theirs.
                routing_key = self.topology.routing_key(entry.event.host)
                publish(self._channel, writer, self.topology.exchange, routing_key, entry)
                self._tracker.sent(entry)
        self.published += len(batch)
        if resend:
            self.resent += len(batch)
            self.refusals.resent()

    def _after_refusals(self, channel: amqp.Channel) -> None:
        """Declare the host queue again after a return; schedule the resend of refused entries."""
        while self._redeclare:
            # Events recovered from the outbox keep their host: its queue, then.
            host = self._redeclare.pop()
            self._declare_host_queue(channel, host)
            LOG.warning("declared the host queue of %s and its binding again", host)
        self.refusals.update(retrying=self._tracker.retrying, waiting=self._tracker.waiting)

    def _on_ack(self, tag: int, multiple: bool) -> None:
        # Confirmed by _confirm_acked, once for every ack read together.
        self._acked += self._tracker.acked(tag, multiple)

    def _confirm_acked(self) -> None:
        """Remove the entries acked since the last call from the outbox, in one transaction."""
        confirmed, self._acked = self._acked, []
        if not confirmed:
            return
        self.outbox.confirm(confirmed)
        self.confirmed += len(confirmed)
        self.backoff.reset()
        now = time.monotonic()
        for entry in confirmed:
            self.observe_latency(now - entry.put_at)

    def _on_blocked(self, reason: str) -> None:
        self._blocked = True
        self.problem = f"broker {self._broker_name()} blocks publishing: {reason}"
        LOG.warning("%s; events wait in the outbox", self.problem)

    def _on_unblocked(self) -> None:
        self._blocked = False
        self.problem = None
        LOG.info("broker %s unblocked publishing", self._broker_name())

    def _on_nack(self, tag: int, multiple: bool) -> None:
        # Kept, and sent again after a backoff on this same connection.
        self.refusals.on_nack(self._tracker.nacked(tag, multiple))

    def _on_return(
        self, _exc: Exception, exchange: str, routing_key: str, message: amqp.Message
    ) -> None:
        # basic.return comes before the ack of the same message: that ack must not confirm it.
        entry = self._tracker.returned(message.properties.get("message_id", ""))
        if entry is not None:
            if self.queue_name:
                self._redeclare.add(entry.event.host)
            self.refusals.on_return(exchange, routing_key, declaring=bool(self.queue_name))
