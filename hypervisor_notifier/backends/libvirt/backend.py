"""The libvirt backend: lifecycle events from libvirtd, over any libvirt URI.

Threads:

- ``libvirt-event-loop`` (see :mod:`.eventloop`) runs libvirt's callbacks.
  They only put a tuple on a queue: no libvirt call, no logging, no lock.
- ``libvirt-dispatch`` owns the connection: it connects with backoff and a
  timeout, registers the callbacks, asks the listener to resync, then
  translates queued events and reports them, in order. A close callback
  (daemon restart, keepalive timeout) and a resync request go through the
  same queue, so the events before them are reported first.

Which guests are reported follows ``[libvirt] report_*`` (a
:class:`~.listing.ListFilter`), for listings and events alike.
"""

from __future__ import annotations

import logging
import queue
import threading
from typing import Any

import libvirt
from oslo_config import cfg

from hypervisor_notifier import events
from hypervisor_notifier.backends import base
from hypervisor_notifier.backends.libvirt import connection, eventloop, transitions
from hypervisor_notifier.backends.libvirt.listing import DomainLister, ListFilter
from hypervisor_notifier.backoff import Backoff
from hypervisor_notifier.conf import ConfigError
from hypervisor_notifier.conf import libvirt as libvirt_conf
from hypervisor_notifier.transport_url import describe_error, mask_secrets

LOG = logging.getLogger(__name__)

_CLOSE_REASONS = {0: "error", 1: "end of file", 2: "keepalive timeout", 3: "client close"}


class _Stop:
    """Queue item: the backend is closing."""


class _Closed:
    """Queue item: libvirt closed the connection of generation ``generation``."""

    def __init__(self, generation: int, reason: int) -> None:
        self.generation = generation
        self.reason = _CLOSE_REASONS.get(reason, f"reason {reason}")


class _Resync:
    """Queue item: a resync was requested."""

    def __init__(self, reason: str) -> None:
        self.reason = reason


class LibvirtBackend(base.Backend):
    """Watch one libvirt connection URI (``[libvirt] connection_uri``)."""

    name = "libvirt"

    def __init__(self, conf: cfg.ConfigOpts) -> None:
        super().__init__(conf)
        opts = conf[libvirt_conf.GROUP]
        self.uri: str = opts.connection_uri
        try:
            connection.check_uri(self.uri)
        except ValueError as exc:
            raise ConfigError(f"[{libvirt_conf.GROUP}] connection_uri: {exc}") from None
        self._opts = opts
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._stopping = threading.Event()
        self.listing = ListFilter(
            include_inactive=opts.report_inactive,
            include_foreign=opts.report_foreign,
            include_domain0=opts.report_domain0,
        )
        self._conn: libvirt.virConnect | None = None
        self._lister: DomainLister | None = None
        self._generation = 0
        self._callback_ids: list[int] = []
        self._thread: threading.Thread | None = None

    def connect(self, listener: base.BackendListener) -> None:
        """See :meth:`Backend.connect`."""
        eventloop.start()
        self._thread = threading.Thread(
            target=self._dispatch, args=(listener,), name="libvirt-dispatch", daemon=True
        )
        self._thread.start()

    def alive(self) -> bool:
        """See :meth:`Backend.alive`: the dispatch thread runs."""
        return self._thread is not None and self._thread.is_alive()

    def close(self) -> None:
        """See :meth:`Backend.close`."""
        self._stopping.set()
        self._queue.put(_Stop())
        if self._thread is not None:
            self._thread.join(timeout=self._opts.connect_timeout + 5)

    def request_resync(self, reason: str) -> None:
        """See :meth:`Backend.request_resync`."""
        if self._conn is not None:
            self._queue.put(_Resync(reason))

    def list_instances(self) -> list[base.InstanceState]:
        """The reported domains and their states, in one ``getAllDomainStats`` RPC."""
        lister = self._lister
        if lister is None:
            raise base.BackendUnavailable(f"not connected to {self.uri}")
        try:
            states = lister.list_instance_states(self.listing)
        except libvirt.libvirtError as exc:
            raise base.BackendUnavailable(f"listing domains failed: {exc}") from exc
        listing = []
        for dom, code in states:
            state_name, power_state = transitions.state(code)
            listing.append(
                base.InstanceState(dom.UUIDString(), dom.name(), power_state, state_name)
            )
        return listing

    # -- libvirt callbacks: event-loop thread, hand off only -------------------

    def _on_lifecycle(
        self, _conn: object, dom: libvirt.virDomain, event: int, detail: int, _opaque: object
    ) -> None:
        # UUIDString() and name() read the local virDomain struct: no RPC.
        self._queue.put((dom, dom.UUIDString(), dom.name(), event, detail, events.utcnow()))

    def _on_reboot(self, _conn: object, dom: libvirt.virDomain, _opaque: object) -> None:
        self._queue.put((dom, dom.UUIDString(), dom.name(), None, None, events.utcnow()))

    def _on_close(self, _conn: object, reason: int, generation: int) -> None:
        self._queue.put(_Closed(generation, reason))

    # -- dispatch thread -------------------------------------------------------

    def _dispatch(self, listener: base.BackendListener) -> None:
        backoff = Backoff(maximum=self._opts.reconnect_interval_max)
        while not self._stopping.is_set():
            if not self._open(backoff):
                continue
            reason = self._serve(listener)
            self._release()
            if reason is None:
                return
            self.problem = f"lost libvirt {mask_secrets(self.uri)} ({reason})"
            LOG.warning("%s; reconnecting", self.problem)
            listener.on_disconnected(reason)

    def _open(self, backoff: Backoff) -> bool:
        """Open the connection and register callbacks; on failure wait a backoff delay."""
        try:
            conn = connection.open_connection(
                self.uri, read_only=self._opts.read_only, timeout=self._opts.connect_timeout
            )
        except (connection.ConnectTimeout, libvirt.libvirtError) as exc:
            delay = backoff.next()
            self.problem = (
                f"cannot connect to libvirt {mask_secrets(self.uri)}: " + describe_error(exc)
            )
            LOG.warning("%s; retrying in %.1f s", self.problem, delay)
            self._stopping.wait(delay)
            return False
        self._generation += 1
        self._conn = conn
        self._lister = DomainLister(conn)
        try:
            if self._opts.keepalive_interval > 0:
                conn.setKeepAlive(self._opts.keepalive_interval, self._opts.keepalive_count)
            conn.registerCloseCallback(self._on_close, self._generation)
            self._callback_ids = [
                conn.domainEventRegisterAny(
                    None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, self._on_lifecycle, None
                ),
                conn.domainEventRegisterAny(
                    None, libvirt.VIR_DOMAIN_EVENT_ID_REBOOT, self._on_reboot, None
                ),
            ]
        except libvirt.libvirtError as exc:
            LOG.warning("registering libvirt callbacks on %s failed: %s", self.uri, exc)
            self._release()
            self._stopping.wait(backoff.next())
            return False
        backoff.reset()
        self.problem = None
        LOG.info("connected to libvirt %s (read-only: %s)", self.uri, self._opts.read_only)
        return True

    def _serve(self, listener: base.BackendListener) -> str | None:
        """Report events until the connection closes (its reason) or the backend stops (None)."""
        self._resync(listener, "connected")
        while True:
            item = self._queue.get()
            if isinstance(item, _Stop):
                return None
            if isinstance(item, _Closed):
                if item.generation == self._generation:
                    return item.reason
                continue
            if isinstance(item, _Resync):
                self._resync(listener, item.reason)
                continue
            observation = self._translate(*item)
            if observation is None:
                continue
            try:
                listener.on_event(observation)
            except Exception:
                # A listener bug must not kill the only thread reporting events.
                LOG.exception("reporting %s failed", observation)

    def _resync(self, listener: base.BackendListener, reason: str) -> None:
        try:
            listener.on_resync(reason)
        except base.BackendUnavailable as exc:
            # The connection died during the resync: its close callback is queued.
            LOG.warning("resync (%s) of %s failed: %s", reason, self.uri, exc)
        except Exception:
            LOG.exception("resync (%s) of %s failed", reason, self.uri)

    def _translate(
        self,
        dom: libvirt.virDomain,
        uuid: str,
        name: str,
        event: int | None,
        detail: int | None,
        occurred_at: Any,
    ) -> events.Observation | None:
        if event is None or detail is None:
            translation = transitions.Translation(
                "REBOOT", "", (events.Transition.REBOOTED, events.PowerState.RUNNING)
            )
        else:
            translation = transitions.translate(event, detail)
        if translation.outcome is None:
            # A definition changed: who launched the domain may have too.
            if self._lister is not None:
                self._lister.forget(uuid)
            return None
        if not self._reported(dom, name):
            return None
        transition, power_state = translation.outcome
        return events.Observation(
            uuid,
            name,
            transition,
            power_state,
            translation.reason,
            translation.detail,
            occurred_at,
        )

    def _reported(self, dom: libvirt.virDomain, name: str) -> bool:
        """Whether the ``[libvirt] report_*`` filter admits ``dom``."""
        if self._lister is None:
            return True
        try:
            origin = self._lister.origin(dom)
        except libvirt.libvirtError as exc:
            # Unknown origin: better one event too many than a lost one.
            LOG.warning("cannot tell who launched %s (%s); reporting it", name, exc)
            return True
        if self.listing.admits(origin):
            return True
        LOG.debug("not reporting %s (launched by %s)", name, origin.value)
        return False

    def _release(self) -> None:
        """Deregister callbacks and close the connection, ignoring a dead daemon's errors."""
        conn, self._conn, self._lister = self._conn, None, None
        if conn is None:
            return
        for callback_id in self._callback_ids:
            connection.quietly(conn.domainEventDeregisterAny, callback_id)
        self._callback_ids = []
        connection.quietly(conn.unregisterCloseCallback)
        connection.quietly(conn.close)
