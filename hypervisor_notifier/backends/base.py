"""The contract between the service and a hypervisor backend.

A backend watches one hypervisor (a libvirtd, an ESXi host or vCenter) and
reports guest lifecycle changes. It knows nothing of AMQP, hosts or event
ids: it reports :class:`~hypervisor_notifier.events.Observation` objects to
a :class:`BackendListener`, and the service stamps and publishes them.

Delivery semantics a backend must honour:

- **Order.** ``on_events`` is called from one backend thread at a time, in
  the order the hypervisor reported the changes.
- **Batches.** Each ``on_events`` call carries every event waiting at that
  moment, so the listener can commit them together (group commit) rather
  than one by one behind each other.
- **No blocking in hypervisor callbacks.** A hypervisor's own callback only
  hands the raw event to a queue; translation and ``on_events`` run in a
  thread of the backend.
- **A failing listener is logged, not fatal.** An exception from a listener
  call is logged with its traceback and the backend goes on with the next
  events, on the same connection.
- **Gaps are announced, not hidden.** A hypervisor does not replay events
  missed while disconnected. An outage is announced with ``on_disconnected``
  once: when a connection is lost, or when connecting fails and no outage
  was announced since the last connection (the hypervisor is unreachable
  at start), not for every attempt that fails. After every (re)connection,
  once its event callbacks are registered, the backend calls
  ``on_resync``: the listener then lists instances and reports what changed
  meanwhile. No event is reported between the loss and the new
  connection's resync (those still queued from a lost connection are
  dropped), and a connection whose first resync fails is lost too. The
  backend calls ``on_resync`` again when asked through
  :meth:`Backend.request_resync` (a periodic resync). Events that arrive
  while the listener resyncs are queued, not dropped.
- **Never give up.** An unreachable hypervisor is retried with backoff and
  logged; ``connect`` does not raise for it.

:class:`~hypervisor_notifier.backends.dispatch.DispatchingBackend` keeps
these promises for a backend that provides how to connect, release and
translate: both backends here run on it.
"""

from __future__ import annotations

import abc
import dataclasses
import logging
from typing import ClassVar, Protocol

from oslo_config import cfg

from hypervisor_notifier.events import Observation, PowerState
from hypervisor_notifier.faults import FaultObservation
from hypervisor_notifier.host_events import HostObservation

LOG = logging.getLogger(__name__)

#: What a backend reports: a guest's state change or a guest's fault. (The
#: service itself observes the connection: host observations.)
GuestObservation = Observation | FaultObservation
AnyObservation = GuestObservation | HostObservation


@dataclasses.dataclass(frozen=True)
class InstanceState:
    """A guest and its current power state, as a listing found it.

    Arguments:
        instance_uuid: The guest's UUID (nova's instance UUID).
        instance_name: The guest's name on the hypervisor.
        power_state: Its power state now.
        state: The backend's raw name of that state (libvirt ``SHUTOFF``, ...).

    """

    instance_uuid: str
    instance_name: str
    power_state: PowerState
    state: str


class BackendListener(Protocol):
    """What a backend reports to; the service implements it."""

    def on_events(self, observations: list[GuestObservation]) -> None:
        """Receive the guest changes and faults waiting now, oldest first; from one thread."""

    def on_resync(self, reason: str) -> None:
        """Time to list instances and report what changed: events may have been missed.

        Called after every (re)connection, once the event callbacks are
        registered (``reason`` ``connected``; if it raises, the connection is
        taken as lost), and after
        :meth:`Backend.request_resync` (its ``reason``). Called from the thread
        that calls ``on_events``, so no event is reported while it runs.
        """

    def on_disconnected(self, reason: str) -> None:
        """The hypervisor is lost, or unreachable at start; the backend retries with backoff.

        Once per outage: not again for each failed attempt, until a new
        connection was resynced. ``reason`` says why, in a few words (the
        close reason, or the failed attempt's problem).
        """


class Backend(abc.ABC):
    """A hypervisor event source.

    Arguments:
        conf: The service configuration, with the backend's own group registered.

    """

    #: The entry point name, also the ``hypervisor`` field of every event.
    name: ClassVar[str]
    #: Connections to the hypervisor made after the first one.
    reconnects: int = 0

    def __init__(self, conf: cfg.ConfigOpts) -> None:
        self.conf = conf
        #: Why the hypervisor is not being watched now (None while it is).
        self.problem: str | None = "not connected yet"
        #: Connections made again after the first one (each followed by a resync).
        self.reconnects = 0

    @abc.abstractmethod
    def connect(self, listener: BackendListener) -> None:
        """Start watching: connect (retrying in the background) and report to ``listener``.

        Returns at once; the connection is made by the backend's threads, and
        ``listener.on_resync`` says when it is up.
        """

    @abc.abstractmethod
    def request_resync(self, reason: str) -> None:
        """Ask for ``listener.on_resync(reason)`` from the backend's thread, after queued events.

        Safe from any thread; ignored while disconnected (the reconnection
        resyncs anyway).
        """

    @abc.abstractmethod
    def list_instances(self) -> list[InstanceState]:
        """Return every reported guest with its power state, in as few calls as possible.

        Which guests are reported is the backend's configuration. Only call it
        from ``on_resync`` or ``on_events`` (the backend's own thread). Raises
        :class:`BackendUnavailable` when not connected.
        """

    def alive(self) -> bool:
        """Whether the backend's threads run, once connected (systemd's watchdog asks).

        A backend with its own threads overrides it; a dead thread stops the
        watchdog's pings, so systemd restarts the service.
        """
        return True

    @abc.abstractmethod
    def close(self) -> None:
        """Stop watching and release the connection; no listener call follows."""


class BackendUnavailable(Exception):
    """The hypervisor cannot be reached now; the backend is reconnecting."""
