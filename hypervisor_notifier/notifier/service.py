"""The service: backend -> outbox -> publisher, with resyncs that publish only changes.

Data flows one way. The backend reports observations from its own thread,
every one waiting at once; the service stamps each with this host, a fresh
``event_id`` and the next ``seq``, and puts the batch in the outbox, which
commits it in one transaction (group commit: an event is accepted once its
batch is committed); the publisher thread sends them.

A resync lists every reported instance and publishes, with ``resync: true``,
only the states that differ from what was last published: at start (against
what the previous run published, kept by a durable outbox), after every
reconnection to the hypervisor, and every ``[sync] interval`` seconds. In
steady state a resync publishes nothing.

The hypervisor connection itself is told with host events
(:mod:`~hypervisor_notifier.notifier.host_state`): ``disconnected`` once per
outage, ``connected`` after the resync of a new connection, its events first.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Sequence

from oslo_config import cfg

from hypervisor_notifier import events
from hypervisor_notifier.backends.base import (
    AnyObservation,
    Backend,
    BackendListener,
    GuestObservation,
)
from hypervisor_notifier.host_events import HostObservation
from hypervisor_notifier.notifier.host_state import HostConnection
from hypervisor_notifier.notifier.outbox import Outbox
from hypervisor_notifier.notifier.publisher import Publisher
from hypervisor_notifier.notifier.resync import PublishedStates
from hypervisor_notifier.notifier.stamps import SequenceCounter, new_event_ids
from hypervisor_notifier.wire import WireEvent

LOG = logging.getLogger(__name__)


class Service:
    """Forward one backend's events to the broker.

    Arguments:
        backend: The hypervisor backend (not yet connected).
        outbox: Where events wait for the broker's confirm.
        publisher: Publishes the outbox (not yet started).
        host: This compute host's name, stamped on every event.
        shutdown_timeout: Seconds :meth:`stop` waits for in-flight events.
        sync_interval: Seconds between periodic resyncs; 0 for none.

    """

    #: The most events committed in one transaction: a burst is accepted in
    #: groups of this many (a commit costs about as much as encoding a few events).
    MAX_BATCH = 64

    def __init__(
        self,
        backend: Backend,
        outbox: Outbox,
        publisher: Publisher,
        *,
        host: str,
        shutdown_timeout: float = 30.0,
        sync_interval: float = 0,
    ) -> None:
        self.backend = backend
        self.outbox = outbox
        # What the previous run left in the outbox: the seq to continue above, the
        # states published (a resync publishes only what differs).
        self.sequence = SequenceCounter(outbox.last_seq)
        self.published_states = PublishedStates(outbox.known_states(), outbox.forget_states)
        self.publisher = publisher
        self.host = host
        self.shutdown_timeout = shutdown_timeout
        self.sync_interval = sync_interval
        #: Events put in the outbox: pushed by the hypervisor, or found by a resync.
        self.received = {"pushed": 0, "resync": 0}
        #: What the bus was told of the hypervisor connection (host events).
        self.host_connection = HostConnection()
        #: Resyncs done, by reason.
        self.resyncs: collections.Counter[str] = collections.Counter()
        self._stop = threading.Event()
        #: What the backend reports to: the service, or a wrapper of it (the watchdog's).
        self.listener: BackendListener = self

    @classmethod
    def from_conf(cls, conf: cfg.ConfigOpts, backend: Backend, outbox: Outbox) -> Service:
        """Build the service and its publisher from the configuration."""
        return cls(
            backend,
            outbox,
            Publisher.from_conf(conf, outbox),
            host=conf.host,
            shutdown_timeout=conf.shutdown_timeout,
            sync_interval=conf.sync.interval,
        )

    # -- BackendListener -------------------------------------------------------

    def on_events(self, observations: list[GuestObservation]) -> None:
        """Stamp the pushed events and commit them to the outbox together."""
        self._emit_many(observations, resync=False)

    def on_resync(self, reason: str) -> None:
        """Publish what changed since the last published state of each instance.

        After a new connection's resync, ``hypervisor.host.connected`` follows
        its events. A listing that fails raises: nothing is published.
        """
        started = time.monotonic()
        self.resyncs[reason] += 1
        listing = self.backend.list_instances()
        now = events.utcnow()
        missed = self.published_states.missed(listing, now)
        self._emit_many(missed, resync=True)
        vanished = sum(1 for o in missed if o.transition is events.Transition.VANISHED)
        LOG.info(
            "resync (%s): %d instances listed, %d changes published (%d vanished), in %.1f ms",
            reason,
            len(listing),
            len(missed),
            vanished,
            (time.monotonic() - started) * 1000,
        )
        connected = self.host_connection.resynced(
            listed=len(listing), changed=len(missed) - vanished, vanished=vanished, now=now
        )
        if connected is not None:
            self._emit_host(connected)
            LOG.info("watching %s (%s): published hypervisor.host.connected",
                     self.backend.name, connected.reason)  # fmt: skip

    def on_disconnected(self, reason: str) -> None:
        """Publish ``hypervisor.host.disconnected``, once per outage; the backend reconnects."""
        disconnected = self.host_connection.lost(reason, events.utcnow())
        if disconnected is None:
            return  # the same outage: said already
        self._emit_host(disconnected)
        # The reason is the backend's own warning line, with its retry.
        LOG.warning(
            "published hypervisor.host.disconnected: guest states are unknown until the "
            "resync after reconnecting"
        )

    def _emit_host(self, observation: HostObservation) -> None:
        # Counted by the host connection's own counter, not as an event received.
        self._emit_many([observation], resync=False, counted=False)

    def _emit_many(
        self,
        observations: Sequence[AnyObservation],
        *,
        resync: bool,
        counted: bool = True,
    ) -> None:
        # One transaction per group of at most MAX_BATCH: once it returns, every event
        # in it is accepted. Bounded, so the first events of a burst are not held
        # while the last ones are encoded (and signed).
        for start in range(0, len(observations), self.MAX_BATCH):
            group = observations[start : start + self.MAX_BATCH]
            seqs, ids = self.sequence.take(len(group)), new_event_ids(len(group))
            stamps = zip(group, seqs, ids, strict=True)
            self._accept([self._stamp(o, resync, seq, event_id) for o, seq, event_id in stamps])
        if counted:
            self.received["resync" if resync else "pushed"] += len(observations)

    def _accept(self, batch: list[WireEvent]) -> None:
        self.outbox.put_many(batch)
        for event in batch:
            if isinstance(event, events.LifecycleEvent):
                self.published_states.record(event)
        if LOG.isEnabledFor(logging.DEBUG):  # its arguments cost more than the call
            for event in batch:
                # "(<uuid>) REASON/DETAIL": the form operators (and the outbox tests) grep for.
                LOG.debug("%s (%s) %s/%s seq=%d", event.event_type, event.subject, event.reason,
                          getattr(event, "detail", ""), event.seq)  # fmt: skip

    def _stamp(
        self, observation: AnyObservation, resync: bool, seq: int, event_id: str
    ) -> WireEvent:
        """The event to publish for an observation of any kind (only lifecycle ones resync)."""
        extra = {"resync": resync} if isinstance(observation, events.Observation) else {}
        return observation.event_class.from_observation(  # type: ignore[return-value]
            observation,
            host=self.host,
            hypervisor=self.backend.name,
            seq=seq,
            event_id=event_id,
            **extra,
        )

    # -- lifecycle -------------------------------------------------------------

    def start(self) -> None:
        """Start publishing, then watching the hypervisor, then the periodic resync."""
        self.publisher.start()
        self.backend.connect(self.listener)
        if self.sync_interval > 0:
            threading.Thread(
                target=self._periodic_resync, name="resync-timer", daemon=True
            ).start()

    def _periodic_resync(self) -> None:
        # wait() returns True once a stop is requested.
        while not self._stop.wait(self.sync_interval):
            self.backend.request_resync("periodic")

    def request_stop(self) -> None:
        """Ask :meth:`wait` to return (safe from a signal handler)."""
        self._stop.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until :meth:`request_stop` is called (True), or ``timeout`` s pass (False)."""
        return self._stop.wait(timeout)

    def stop(self) -> int:
        """Stop watching, then publish what was received; return how many were left unconfirmed."""
        self.backend.close()
        left = self.publisher.stop(self.shutdown_timeout)
        if not left:
            LOG.info("stopped: every event was confirmed by the broker")
        elif not self.outbox.durable:
            LOG.error(
                "stopping with %d events unconfirmed and lost: %s", left, self.outbox.problem
            )
        else:
            LOG.warning("stopping with %d events unconfirmed; the next start publishes them", left)
        return left
