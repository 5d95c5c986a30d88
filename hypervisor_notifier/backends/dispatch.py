"""The skeleton both backends run on: one dispatch thread and its queue of typed items.

:class:`DispatchingBackend` keeps the promises of the backend contract
(:mod:`hypervisor_notifier.backends.base`) for a backend that provides how
to connect, release and translate.
"""

from __future__ import annotations

import abc
import collections
import dataclasses
import logging
import queue
import threading
from collections.abc import Callable

from oslo_config import cfg

from hypervisor_notifier.backends.base import (
    Backend,
    BackendListener,
    BackendUnavailable,
    GuestObservation,
)
from hypervisor_notifier.backoff import Backoff

LOG = logging.getLogger(__name__)


class ConnectFailed(Exception):
    """A connection attempt failed; the text is the problem, as /healthz tells it."""


# -- the items of a dispatch queue ---------------------------------------------


@dataclasses.dataclass(frozen=True)
class Stop:
    """Queue item: the backend is closing."""


@dataclasses.dataclass(frozen=True)
class Closed:
    """Queue item: the hypervisor closed connection number ``generation``.

    Arguments:
        generation: Which connection (a close of an earlier one is ignored).
        reason: Why, in a few words (``end of file``).

    """

    generation: int
    reason: str


@dataclasses.dataclass(frozen=True)
class ResyncRequested:
    """Queue item: :meth:`Backend.request_resync` was called.

    Arguments:
        reason: Passed on to ``on_resync``.

    """

    reason: str


@dataclasses.dataclass(frozen=True)
class HypervisorEvent:
    """Queue item: a raw event, as a hypervisor callback handed it off; backends subclass it."""


@dataclasses.dataclass(frozen=True)
class Observed(HypervisorEvent):
    """Queue item: an event already translated (a polled hypervisor translates as it reads).

    Arguments:
        observation: What to report.

    """

    observation: GuestObservation


QueueItem = Stop | Closed | ResyncRequested | HypervisorEvent


class DispatchingBackend(Backend):
    """The skeleton every backend runs on: one dispatch thread and its queue.

    The thread (``<name>-dispatch``) connects (:meth:`_open`), retrying with
    backoff; counts every connection after the first in :attr:`reconnects`;
    asks the listener to resync; then takes the queue's items: every item
    waiting at once, the events among them translated (:meth:`_translate`)
    and reported in one ``on_events`` call, a resync request or a close after
    the events queued before it. A lost connection (a :class:`Closed` item of
    the current connection, an exception while serving, or a failure of its
    first resync) is released (:meth:`_release`) and connected again; the
    events queued by its close are reported first, any queued later dropped
    (the next resync tells their guests' state). ``on_disconnected``
    announces an outage once: the loss of a resynced connection, or a failed
    attempt since the last one (at start: the hypervisor is unreachable),
    not each attempt that fails.
    Listener calls are guarded: an exception is logged and skipped.

    Arguments:
        conf: See :class:`Backend`.
        reconnect_interval_max: The largest delay between connection attempts.

    """

    def __init__(self, conf: cfg.ConfigOpts, *, reconnect_interval_max: float) -> None:
        super().__init__(conf)
        self._backoff = Backoff(maximum=reconnect_interval_max)
        self._queue: queue.SimpleQueue[QueueItem] = queue.SimpleQueue()
        # Items taken from the queue but not handled yet: a close ends the serving
        # of a connection, and what followed it is served on the next one.
        self._backlog: collections.deque[QueueItem] = collections.deque()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        #: Number of the current connection (a close names the one it closes).
        self._generation = 0
        self._connected = False
        # Whether on_disconnected was called since the last connection was resynced.
        self._outage_announced = False

    # -- what a backend provides -----------------------------------------------

    @abc.abstractmethod
    def _open(self) -> None:
        """Connect and register for events (log the success); raise :class:`ConnectFailed`."""

    @abc.abstractmethod
    def _release(self) -> None:
        """Forget the connection, quietly (the hypervisor may be gone); safe to call twice."""

    @abc.abstractmethod
    def _lost(self, reason: str) -> str:
        """The problem sentence for a connection lost for ``reason``."""

    @property
    @abc.abstractmethod
    def _close_timeout(self) -> float:
        """Seconds :meth:`close` waits for the dispatch thread (its longest blocking call)."""

    def _translate(self, item: HypervisorEvent) -> GuestObservation | None:
        """What to report for a raw event; None for nothing (this one is not reported)."""
        return item.observation if isinstance(item, Observed) else None

    def _wait_for_items(self) -> list[QueueItem]:
        """Block until an item is queued and return it (a polled hypervisor polls here).

        A backend whose hypervisor is polled rather than calling back
        overrides it: unless items are queued, poll (bounded) and return what
        it found, maybe nothing; they come before the items queued meanwhile.
        An exception means the connection is lost.
        """
        return [self._queue.get()]

    def _describe(self, exc: Exception) -> str:
        """A one-line reason for a connection lost by ``exc``."""
        return f"{type(exc).__name__}: {exc}".rstrip(": ")

    # -- Backend -----------------------------------------------------------------

    def connect(self, listener: BackendListener) -> None:
        """See :meth:`Backend.connect`."""
        self._thread = threading.Thread(
            target=self._dispatch, args=(listener,), name=f"{self.name}-dispatch", daemon=True
        )
        self._thread.start()

    def alive(self) -> bool:
        """See :meth:`Backend.alive`: the dispatch thread runs."""
        return self._thread is not None and self._thread.is_alive()

    def request_resync(self, reason: str) -> None:
        """See :meth:`Backend.request_resync`."""
        if self._connected:
            self._queue.put(ResyncRequested(reason))

    def close(self) -> None:
        """See :meth:`Backend.close`."""
        self._stopping.set()
        self._queue.put(Stop())
        if self._thread is not None:
            self._thread.join(self._close_timeout + 5)

    # -- the dispatch thread -----------------------------------------------------

    def _dispatch(self, listener: BackendListener) -> None:
        connections = 0
        while not self._stopping.is_set():
            self._discard_lost_events()
            try:
                self._generation += 1
                self._open()
            except ConnectFailed as exc:
                failed: str | None = str(exc)
            else:
                failed = None
            if failed is not None:
                # Out of the except block: the listener's log lines carry no traceback.
                self._release()
                self._announce(listener, failed)
                self._retry_later(failed)
                continue
            self._backoff.reset()
            self.problem = None
            self._connected = True
            connections += 1
            self.reconnects = connections - 1
            try:
                reason = self._serve(listener)
            except Exception as exc:  # any failure: connect again, never let the thread die
                reason = self._describe(exc)
            finally:
                self._connected = False
                self._release()
            if reason is None:
                return
            self._announce(listener, reason)
            self._retry_later(self._lost(reason))

    def _announce(self, listener: BackendListener, reason: str) -> None:
        """``on_disconnected``, once per outage: not again for each failed attempt."""
        if not self._outage_announced:
            self._outage_announced = True
            self._guarded(listener.on_disconnected, reason)

    def _discard_lost_events(self) -> None:
        """Drop the events queued since a connection was lost, before opening the next one.

        Those queued by its close were reported (:meth:`_report_queued`);
        any handed over after the outage was announced, or while a first
        resync failed, would be reported after the next connection's resync
        and contradict it: the resync tells their guests' state instead. A
        stop request is kept.
        """
        dropped = len(self._take_queued_events())
        if dropped:
            LOG.info(
                "dropped %d events queued from the lost connection of %s: the resync "
                "after reconnecting tells their guests' state",
                dropped,
                self.name,
            )

    def _retry_later(self, problem: str) -> None:
        self.problem = problem
        if not self._stopping.is_set():
            delay = self._backoff.next()
            LOG.warning("%s; retrying in %.1f s", problem, delay)
            self._stopping.wait(delay)

    def _serve(self, listener: BackendListener) -> str | None:
        """Report until the connection is lost (its reason) or the backend stops (None).

        A connection whose first resync fails is lost: until a resync ran,
        the guests' state is unknown and none of its events is reported.
        """
        failure = self._resync(listener, "connected")
        if failure is not None:
            return failure
        self._outage_announced = False
        while True:
            self._take()
            batch: list[GuestObservation] = []
            while self._backlog:
                item = self._backlog.popleft()
                if isinstance(item, HypervisorEvent):
                    observation = self._translated(item)
                    if observation is not None:
                        batch.append(observation)
                    continue
                # The events queued before a control item are reported before it.
                self._report(listener, batch)
                batch = []
                if isinstance(item, Stop):
                    return None
                if isinstance(item, Closed) and item.generation == self._generation:
                    self._report_queued(listener)
                    return item.reason
                if isinstance(item, ResyncRequested):
                    self._resync(listener, item.reason)
            self._report(listener, batch)

    def _report_queued(self, listener: BackendListener) -> None:
        """Report the events queued by now, at a close: what the connection saw before it ended.

        libvirt may queue a connection's last events right behind its close:
        they happened before the loss, so they are reported before it is
        announced. Only a stop request is kept for later.
        """
        batch = [self._translated(item) for item in self._take_queued_events()]
        self._report(listener, [observation for observation in batch if observation is not None])

    def _take_queued_events(self) -> list[HypervisorEvent]:
        """Take every event queued by now out of the backlog; of the rest, keep a stop request."""
        self._drain()
        queued = [item for item in self._backlog if isinstance(item, HypervisorEvent)]
        self._backlog = collections.deque(item for item in self._backlog if isinstance(item, Stop))
        return queued

    def _take(self) -> None:
        """Move the first items (waiting for them) and every item queued then to the backlog."""
        if not self._backlog:
            self._backlog.extend(self._wait_for_items())
        self._drain()

    def _drain(self) -> None:
        """Move every item queued now to the backlog."""
        while True:
            try:
                self._backlog.append(self._queue.get_nowait())
            except queue.Empty:
                return

    def _translated(self, item: HypervisorEvent) -> GuestObservation | None:
        try:
            return self._translate(item)
        except Exception:
            # A translation bug costs that event (a resync repairs its state), not the batch.
            LOG.exception("translating %s failed", item)
            return None

    def _report(self, listener: BackendListener, batch: list[GuestObservation]) -> None:
        if batch:
            self._guarded(listener.on_events, batch)

    def _resync(self, listener: BackendListener, reason: str) -> str | None:
        """Ask the listener to resync; return why it failed (None when it ran)."""
        try:
            listener.on_resync(reason)
        except BackendUnavailable as exc:
            # The connection died during the resync.
            LOG.warning("resync (%s) of %s failed: %s", reason, self.name, exc)
            return f"resync failed: {exc}"
        except Exception as exc:
            LOG.exception("resync (%s) of %s failed", reason, self.name)
            return f"resync failed: {self._describe(exc)}"
        return None

    @staticmethod
    def _guarded(call: Callable[..., None], *args: object) -> None:
        try:
            call(*args)
        except Exception:
            # A listener bug must not kill the only thread reporting events, nor
            # cost the connection: logged, and the next events are reported.
            LOG.exception("%s failed", getattr(call, "__qualname__", call))
