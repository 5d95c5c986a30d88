"""Several Subscribers over one connection: a channel each, one thread for all.

A Subscriber owns a connection and a thread. A process that consumes many
queues (a test fleet of simulated hosts, a tool reading the queues of a
whole cell) would otherwise hold as many connections on the broker, and as
many threads that each wake to poll and contend for the GIL.
:class:`SubscriberGroup` consumes every member's queue over one connection,
each member on a channel of its own (its own prefetch, acknowledgements and
consumer tag), and runs every member's callback from its one thread.

Each member keeps its delivery semantics (dedupe, order per instance, acks
after the callback, its own host's events only, a verifier, a state file):
its own :class:`~hypervisor_notifier.consumer.dispatcher.Dispatcher`
judges each of its messages. What the members share is the connection's
fate: a lost connection, or a callback that fails (which redelivers by
closing the connection), reconnects them all, and the broker requeues every
member's unacknowledged messages; members whose callback had already seen
them drop them as duplicates.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import kombu

from hypervisor_notifier.consumer.subscriber import Subscriber
from hypervisor_notifier.events import LifecycleEvent

#: RabbitMQ's default ``channel_max`` is 2047; channel 0 is the connection's.
MAX_MEMBERS = 2046


def _never_called(_event: LifecycleEvent) -> None:  # pragma: no cover - the group has no queue
    raise AssertionError("a SubscriberGroup consumes only its members' queues")


class SubscriberGroup(Subscriber):
    """Consume the queues of ``subscribers`` over one connection, a channel each.

    The members are not started themselves: :meth:`start` (or :meth:`run`)
    of the group consumes for all of them, and :meth:`stop` stops them all.
    A member's :meth:`~Subscriber.wait_ready` returns once its own queue is
    declared and bound, the group's once every member consumes; a member's
    ``stats`` count its own messages. The group connects with its own
    connection settings (the members' are not used); its transport URL must
    reach the members' queues.

    Arguments:
        transport_url: The broker(s), as an oslo.messaging transport URL.
        subscribers: The members (not started), at most :data:`MAX_MEMBERS`.
        **connection: The group's connection settings, as :class:`Subscriber`
            takes them (``heartbeat``, ``connect_timeout``, ``poll_interval``,
            ``ssl_ca_file``...; not those of a queue).

    """

    def __init__(
        self, transport_url: str, subscribers: Sequence[Subscriber], **connection: Any
    ) -> None:
        if not subscribers or len(subscribers) > MAX_MEMBERS:
            raise ValueError(f"a SubscriberGroup takes 1 to {MAX_MEMBERS} subscribers")
        # The group's own queue arguments are never used: it consumes only its members'.
        super().__init__(transport_url, _never_called, queue="(group)", **connection)
        self.members = list(subscribers)
        # Members that handled a message since the loop last turned: they may have acks due.
        self._touched: dict[Subscriber, None] = {}

    def run(self, _tokens: int = 1, **kwargs: Any) -> None:
        """Consume every member's queue until :meth:`stop` (blocking)."""
        try:
            super().run(_tokens, **kwargs)
        finally:
            for member in self.members:
                member._ready.clear()
                if member.state is not None:
                    member.state.close()

    def get_consumers(self, Consumer: Any, channel: Any) -> list[kombu.Consumer]:
        """Each member's consumer, on a channel of its own of the group's connection."""
        connection = channel.connection.client  # kombu's Connection, as the hooks get it
        consumers = []
        for member in self.members:
            own = channel if member is self.members[0] else channel.connection.channel()
            bound = functools.partial(kombu.Consumer, own, on_decode_error=self.on_decode_error)
            ours = member.get_consumers(bound, own)  # its queue declared and bound
            for consumer in ours:
                consumer.on_delivery = functools.partial(self._on_member_delivery, member)
            # Ready before its consumer starts: while the next members' consumers
            # start, the broker already delivers to this member, which must judge
            # those messages anew (after a redelivery) and ack them on this channel.
            member.on_consume_ready(connection, own, ours)
            consumers += ours
        return consumers

    def on_consume_ready(
        self, connection: Any, channel: Any, consumers: Any, **kwargs: Any
    ) -> None:
        """Every member consumes: the group's :meth:`wait_ready` returns."""
        self._consuming = connection
        self._ready.set()

    def on_consume_end(self, connection: Any, channel: Any) -> None:
        """Not consuming any more: each member acks what it handled, while its channel is open."""
        for member in self.members:
            member.on_consume_end(connection, channel)
        self._touched.clear()
        self._consuming = None
        self._ready.clear()

    def on_iteration(self) -> None:
        """Each turn of the loop: the members that handled messages ack as they would alone."""
        for member in list(self._touched):
            member.on_iteration()
            if not member._acks.pending:
                del self._touched[member]

    def _on_member_delivery(self, member: Subscriber, channel: Any, tag: int, body: Any) -> None:
        self._touched[member] = None
        member._on_delivery(channel, tag, body)
