"""Replaying the history stream: what happened to a guest, or a host, since a moment.

Notifiers configured with ``[publisher] history_stream`` also route their
events to a RabbitMQ stream, which keeps them for its retention
(``history_max_age``, ``history_max_bytes``) whether or not anyone reads
them. A stream is read over AMQP 0.9.1 like a queue, with a consumer
argument ``x-stream-offset`` saying where to start: here a timestamp, so no
other client library is needed. Reading does not remove anything: any number
of readers replay the same events, each from its own offset.

The stream starts a reader at the beginning of the chunk holding the
timestamp, so events a little older may come first: they are skipped by
their ``occurred_at``. Each event is decoded and, with a verifier, checked
like a Subscriber does (a forged event in the stream is counted, not
shown); a replay is not refused as a replay, since replaying is the point.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
from collections.abc import Callable

import amqp

from hypervisor_notifier import wire
from hypervisor_notifier.events import MalformedEvent, utcnow
from hypervisor_notifier.signing import Verifier
from hypervisor_notifier.tls import BrokerAccess
from hypervisor_notifier.wire import WireEvent

LOG = logging.getLogger(__name__)

#: Unacknowledged stream messages the broker sends ahead (a stream needs a prefetch).
PREFETCH = 500


@dataclasses.dataclass
class HistoryStats:
    """What a replay read."""

    read: int = 0
    shown: int = 0
    #: Malformed, or (with a verifier) not signed by an accepted key.
    refused: int = 0


class HistoryReader:
    """Read a history stream from a moment on.

    Arguments:
        access: The broker(s) holding the stream (the first that answers is
            read), and the TLS files.
        stream: The stream's name (``[publisher] history_stream``).
        verifier: Show only events signed by its keys; None: any well-formed
            event (no default: showing unsigned events is the caller's choice).

    """

    def __init__(self, access: BrokerAccess, stream: str, *, verifier: Verifier | None) -> None:
        self.access = access
        self.stream = stream
        self.verifier = verifier
        self.stats = HistoryStats()

    def replay(
        self,
        since: datetime.datetime,
        callback: Callable[[WireEvent], None],
        *,
        matches: Callable[[WireEvent], bool] = lambda _event: True,
        follow: bool = False,
        idle: float = 1.0,
        stop: Callable[[], bool] = lambda: False,
    ) -> HistoryStats:
        """Hand every matching event since ``since`` to ``callback``, oldest first.

        Events of every kind: a guest's state changes and faults, and the host
        events that say when its state was unknown (``matches`` chooses).

        Arguments:
            since: The earliest ``occurred_at`` shown (aware).
            callback: Called with each matching event, in the stream's order.
            matches: Which events to show.
            follow: Go on with new events as they come (until ``stop``); else
                return once nothing more arrived for ``idle`` seconds (the end).
            idle: Seconds without a message that mean the end was reached.
            stop: Polled between messages; True ends a ``follow``.

        Raises:
            OSError, amqp.exceptions.AMQPError: The broker or the stream is not there.

        """
        connection = self._connect()
        try:
            channel = connection.channel()
            channel.basic_qos(0, PREFETCH, False)

            def on_message(message: amqp.Message) -> None:
                self._handle(message.body, since, callback, matches)
                channel.basic_ack(message.delivery_tag)

            # py-amqp sends an aware datetime as an AMQP timestamp: the offset's kind.
            channel.basic_consume(self.stream, callback=on_message,
                                  arguments={"x-stream-offset": since})  # fmt: skip
            while not stop():
                try:
                    connection.drain_events(timeout=idle)
                except TimeoutError:
                    if not follow:
                        break
        finally:
            connection.collect()
        return self.stats

    def _connect(self) -> amqp.Connection:
        last: Exception | None = None
        url = self.access.url
        for broker in url.hosts:
            connection = amqp.Connection(
                broker.address, userid=broker.username, password=broker.password,
                virtual_host=url.virtual_host, connect_timeout=5,
                ssl=self.access.amqp_ssl(broker),
            )  # fmt: skip
            try:
                connection.connect()
                return connection
            except (OSError, amqp.exceptions.AMQPError) as exc:
                connection.collect()
                last = exc
        assert last is not None  # noqa: S101 - a URL has at least one host
        raise last

    def _handle(
        self,
        body: bytes | str,
        since: datetime.datetime,
        callback: Callable[[WireEvent], None],
        matches: Callable[[WireEvent], bool],
    ) -> None:
        self.stats.read += 1
        try:
            event = wire.decode(body, self.verifier, fresh=False)
        except MalformedEvent as exc:
            self.stats.refused += 1
            LOG.warning("skipped a message of stream %r: %s", self.stream, exc)
            return
        if event.occurred_at < since or not matches(event):
            return
        self.stats.shown += 1
        callback(event)


def parse_since(text: str, now: datetime.datetime | None = None) -> datetime.datetime:
    """``10m``, ``2h``, ``7d``, ``30s`` ago, or an ISO 8601 time (UTC if it names no zone).

    Raises:
        ValueError: Neither.

    """
    now = now or utcnow()
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if text[:-1].isdigit() and text[-1:] in units:
        return now - datetime.timedelta(seconds=int(text[:-1]) * units[text[-1]])
    try:
        moment = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"--since {text!r} is neither 10m/2h/7d nor an ISO 8601 time") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=datetime.timezone.utc)
