"""AMQP publisher with pipelined publisher confirms.

Delivery semantics:

- **At least once.** An entry leaves the outbox only when the broker acked
  it (``basic.ack``, possibly ``multiple``). A nack, a lost connection or a
  missed heartbeat closes the connection; every unconfirmed entry is sent
  again after reconnecting, oldest first. Consumers dedupe on ``event_id``.
- **Pipelined.** Up to ``confirm_window`` messages are unconfirmed at once;
  acks are read as they arrive, not one round trip per message. The
  messages taken from the outbox together are written to the socket at once.
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
It waits in ``select`` on the broker socket and the outbox's wake
descriptor, so a new event is published as soon as it is put. With TLS,
bytes OpenSSL already decrypted are not on the socket any more: the pump
handles them before it waits (``SSLSocket.pending``).
"""

from __future__ import annotations

import logging
import select
import threading
import time
from collections.abc import Callable

import amqp
from oslo_config import cfg

from hypervisor_notifier import wire
from hypervisor_notifier.backoff import Backoff
from hypervisor_notifier.conf import publisher as publisher_conf
from hypervisor_notifier.notifier import broker
from hypervisor_notifier.notifier.framewriter import FrameWriterFactory
from hypervisor_notifier.notifier.outbox import Entry, Outbox
from hypervisor_notifier.tls import TLSSettings
from hypervisor_notifier.transport_url import TransportURL, describe_error

LOG = logging.getLogger(__name__)

#: Errors after which the connection is dropped and re-established.
CONNECTION_ERRORS = (OSError, amqp.exceptions.AMQPError)


def _tls_pending(sock: object) -> int:
    """Bytes a TLS socket decrypted but nobody read yet (0 for a plain socket)."""
    pending = getattr(sock, "pending", None)
    return pending() if pending is not None else 0


class _Nacked(Exception):
    """The broker refused messages; reconnect and send them again."""


class Publisher:
    """Publish outbox entries to ``exchange`` with routing key ``<topic>.<host>.info``.

    Arguments:
        outbox: Where entries wait; they leave it once confirmed.
        url: The broker(s) to publish to.
        host: This compute host: the routing key and per-host queue name.
        exchange: The durable topic exchange.
        topic: First word of the routing key.
        queue_type: ``classic`` or ``quorum``, for the per-host queue.
        declare_host_queue: Declare and bind the durable per-host queue.
        confirm_window: Most messages unconfirmed at once.
        heartbeat: AMQP heartbeat in seconds (0: none).
        connect_timeout: Seconds allowed to open a connection (and to write).
        reconnect_interval_max: Largest backoff delay between connection attempts.
        tls: Certificates for a TLS URL (``rabbits://``); None: the system's CA store.
        history_stream: A stream that also receives this host's events ("": none).
        history_max_age: The stream's retention by age (``7D``, ``12h``).
        history_max_bytes: The stream's retention by size.

    """

    def __init__(
        self,
        outbox: Outbox,
        *,
        url: TransportURL,
        host: str,
        exchange: str,
        topic: str,
        queue_type: str = "classic",
        declare_host_queue: bool = True,
        confirm_window: int = 256,
        heartbeat: int = 30,
        connect_timeout: float = 5.0,
        reconnect_interval_max: float = 30.0,
        tls: TLSSettings | None = None,
        history_stream: str = "",
        history_max_age: str = "7D",
        history_max_bytes: int = 5 * 2**30,
    ) -> None:
        self.outbox = outbox
        self.url = url
        self.host = host
        self.exchange = exchange
        self.topic = topic
        self.routing_key = wire.routing_key(topic, host)
        self.queue_name = wire.host_queue_name(topic, host) if declare_host_queue else None
        self.queue_arguments = wire.queue_arguments(queue_type)
        self.confirm_window = confirm_window
        self.heartbeat = heartbeat
        self.connect_timeout = connect_timeout
        self.backoff = Backoff(maximum=reconnect_interval_max)
        self.tls = tls or TLSSettings()
        self.history_stream = history_stream
        self.history_arguments = wire.stream_arguments(history_max_age, history_max_bytes)
        #: Counters, for logs and metrics.
        self.published = 0
        self.confirmed = 0
        #: Events sent again after a nack or a lost connection.
        self.resent = 0
        #: Why the publisher is not publishing now (None while it is).
        self.problem: str | None = "not connected yet"
        #: Called with each confirmed event's seconds from outbox to confirm.
        self.observe_latency: Callable[[float], None] = lambda _seconds: None
        self._blocked = False
        self._frames = FrameWriterFactory()
        self._connection: amqp.Connection | None = None
        self._channel: amqp.Channel | None = None
        self._inflight: dict[int, Entry] = {}
        self._next_tag = 1
        self._nacked = False
        self._host_index = 0
        self._stop_requested = threading.Event()
        self._wakeup = threading.Event()
        self._deadline = float("inf")
        self._thread: threading.Thread | None = None

    @classmethod
    def from_conf(cls, conf: cfg.ConfigOpts, outbox: Outbox) -> Publisher:
        """Build a publisher from ``[DEFAULT] host`` and the ``[publisher]`` options.

        The broker settings fall back on oslo.messaging's groups (see
        :mod:`hypervisor_notifier.notifier.broker`).
        """
        opts = conf[publisher_conf.GROUP]
        settings = broker.from_conf(conf)
        return cls(
            outbox,
            url=settings.url,
            host=conf.host,
            exchange=opts.exchange,
            topic=opts.topic,
            queue_type=settings.queue_type,
            declare_host_queue=opts.declare_host_queue,
            confirm_window=opts.confirm_window,
            heartbeat=settings.heartbeat,
            connect_timeout=opts.connect_timeout,
            reconnect_interval_max=opts.reconnect_interval_max,
            tls=settings.tls,
            history_stream=opts.history_stream,
            history_max_age=opts.history_max_age,
            history_max_bytes=opts.history_max_bytes,
        )

    @property
    def connected(self) -> bool:
        """True while a confirmed-publishing channel is open."""
        return self._channel is not None

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
            except (*CONNECTION_ERRORS, _Nacked) as exc:
                self.problem = f"lost broker {self._broker_name()}: {describe_error(exc)}"
                LOG.warning("%s; %d events kept, reconnecting", self.problem, len(self.outbox))
            except Exception as exc:
                # A bug must not kill the only thread publishing: start over.
                self.problem = f"publisher failed: {type(exc).__name__}"
                LOG.exception("publisher failed; %d events kept, reconnecting", len(self.outbox))
            self._disconnect(graceful=False)
            # Also after a connection that worked: a broker that nacks everything
            # must not get a reconnect storm. A confirm resets the backoff.
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

    def _broker_name(self) -> str:
        broker = self.url.hosts[self._host_index % len(self.url.hosts)]
        return f"{broker.username}@{broker.address}"

    def _connect(self) -> bool:
        broker = self.url.hosts[self._host_index % len(self.url.hosts)]
        connection = amqp.Connection(
            host=broker.address,
            userid=broker.username,
            password=broker.password,
            virtual_host=self.url.virtual_host,
            connect_timeout=self.connect_timeout,
            write_timeout=self.connect_timeout,
            heartbeat=self.heartbeat,
            client_properties={"connection_name": f"hypervisor-notifier {self.host}"},
            on_blocked=self._on_blocked,
            on_unblocked=self._on_unblocked,
            frame_writer=self._frames,
            ssl=self.tls.amqp_ssl(broker.hostname) if self.url.tls else False,
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
        self._connection, self._channel = connection, channel
        self._next_tag = 1
        self._nacked = False
        self._blocked = False
        self.problem = None
        LOG.info(
            "connected to broker %s; publishing to exchange %r with routing key %r",
            self._broker_name(),
            self.exchange,
            self.routing_key,
        )
        return True

    def _declare(self, channel: amqp.Channel) -> None:
        channel.exchange_declare(self.exchange, "topic", durable=True, auto_delete=False)
        if self.queue_name:
            channel.queue_declare(
                self.queue_name, durable=True, auto_delete=False, arguments=self.queue_arguments
            )
            channel.queue_bind(self.queue_name, self.exchange, self.routing_key)
        if self.history_stream:
            channel.queue_declare(self.history_stream, durable=True, auto_delete=False,
                                  arguments=self.history_arguments)  # fmt: skip
            channel.queue_bind(self.history_stream, self.exchange, self.routing_key)

    def _disconnect(self, *, graceful: bool) -> None:
        connection, self._connection, self._channel = self._connection, None, None
        if not graceful:
            self.resent += len(self._inflight)
        self._inflight.clear()
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
        room = 0 if self._blocked else self.confirm_window - len(self._inflight)
        wait_for = [self._connection.sock]
        if room > 0:
            self.outbox.clear_wake()
            batch = self.outbox.take(room)
            if batch:
                assert self._frames.writer is not None  # noqa: S101 - set once connected
                with self._frames.writer.batch():
                    for entry in batch:
                        self._publish(self._channel, entry)
            wait_for.append(self.outbox.wake_fd)
        timeout = self.heartbeat / 4 if self.heartbeat else 5.0
        if self._stop_requested.is_set():
            if self._finished():
                return  # all confirmed: nothing to wait for (the stop's wake-up was read above)
            timeout = min(timeout, self._time_left())
        # Frames OpenSSL has decrypted already would not wake select.
        buffered = _tls_pending(self._connection.sock)
        readable, _, _ = select.select(wait_for, [], [], 0 if buffered else timeout)
        if buffered or self._connection.sock in readable:
            self._drain(self._connection)
        if self.heartbeat:
            self._connection.heartbeat_tick()
        if self._nacked:
            raise _Nacked("the broker nacked messages")

    def _publish(self, channel: amqp.Channel, entry: Entry) -> None:
        message = amqp.Message(
            entry.body,
            content_type=wire.CONTENT_TYPE,
            content_encoding="utf-8",
            delivery_mode=2,
            message_id=entry.event.event_id,
        )
        # The event's own host: events recovered from the outbox keep theirs.
        routing_key = wire.routing_key(self.topic, entry.event.host)
        # basic_publish would also poll the socket before each message; the pump
        # reads acks and connection.blocked itself, once per batch.
        channel.send_method(
            amqp.spec.Basic.Publish,
            "Bssbb",
            (0, self.exchange, routing_key, False, False),
            message,
        )
        self._inflight[self._next_tag] = entry
        self._next_tag += 1
        self.published += 1

    @staticmethod
    def _drain(connection: amqp.Connection) -> None:
        """Handle every frame already received (acks, heartbeats), without blocking."""
        while True:
            try:
                connection.drain_events(timeout=0)
            except TimeoutError:
                return

    def _pop_confirmed(self, tag: int, multiple: bool) -> list[Entry]:
        if not multiple:
            entry = self._inflight.pop(tag, None)
            return [entry] if entry else []
        popped = []
        # Tags are inserted in increasing order: the dict's head is the oldest.
        while self._inflight:
            oldest = next(iter(self._inflight))
            if oldest > tag:
                break
            popped.append(self._inflight.pop(oldest))
        return popped

    def _on_ack(self, tag: int, multiple: bool) -> None:
        confirmed = self._pop_confirmed(tag, multiple)
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
        # Left in the outbox: the reconnect sends them again.
        self._nacked = True
        LOG.warning("broker nacked delivery tag %d (multiple: %s)", tag, multiple)
