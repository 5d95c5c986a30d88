"""The libvirt backend: lifecycle and guest fault events from libvirtd, over any libvirt URI.

Threads:

- ``libvirt-event-loop`` (see :mod:`.eventloop`) runs libvirt's callbacks.
  They only put a queue item (:class:`DomainEvent`, :class:`~.dispatch.Closed`)
  on the backend's queue: no libvirt call, no logging, no lock.
- ``libvirt-dispatch`` (the skeleton of :class:`~.dispatch.DispatchingBackend`)
  owns the connection: it connects with backoff and a timeout, registers
  the callbacks, asks the listener to resync, then translates the queued
  events and reports them in batches, in order. A close callback (daemon
  restart, keepalive timeout) and a resync request go through the same
  queue, so the events before them are reported first.

Which guests are reported follows ``[libvirt] report_*`` (a
:class:`~.listing.ListFilter`), for listings and events of every kind alike.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging

import libvirt
from oslo_config import cfg

from hypervisor_notifier import events
from hypervisor_notifier.backends import base, dispatch
from hypervisor_notifier.backends.libvirt import connection, eventloop, faultevents, transitions
from hypervisor_notifier.backends.libvirt.faultcodes import FaultTranslation
from hypervisor_notifier.backends.libvirt.listing import DomainLister, ListFilter
from hypervisor_notifier.conf import ConfigError
from hypervisor_notifier.conf import libvirt as libvirt_conf
from hypervisor_notifier.faults import FaultObservation
from hypervisor_notifier.transport_url import describe_error, mask_secrets

LOG = logging.getLogger(__name__)

_CLOSE_REASONS = {0: "error", 1: "end of file", 2: "keepalive timeout", 3: "client close"}


@dataclasses.dataclass(frozen=True)
class DomainEvent(dispatch.HypervisorEvent):
    """Queue item: a lifecycle, reboot or fault event, as its callback received it.

    Arguments:
        dom: The domain (its local struct: reading its UUID and name is no RPC).
        uuid: Its UUID.
        name: Its name.
        translation: What the event means (:data:`.transitions.REBOOT` for a
            reboot, a :class:`~.faultcodes.FaultTranslation` for a fault).
        occurred_at: When the callback received it.

    """

    dom: libvirt.virDomain
    uuid: str
    name: str
    translation: transitions.Translation | FaultTranslation
    occurred_at: datetime.datetime


class LibvirtBackend(dispatch.DispatchingBackend):
    """Watch one libvirt connection URI (``[libvirt] connection_uri``)."""

    name = "libvirt"

    def __init__(self, conf: cfg.ConfigOpts) -> None:
        opts = conf[libvirt_conf.GROUP]
        super().__init__(conf, reconnect_interval_max=opts.reconnect_interval_max)
        self.uri: str = opts.connection_uri
        try:
            connection.check_uri(self.uri)
        except ValueError as exc:
            raise ConfigError(f"[{libvirt_conf.GROUP}] connection_uri: {exc}") from None
        self._opts = opts
        self.listing = ListFilter(
            include_inactive=opts.report_inactive,
            include_foreign=opts.report_foreign,
            include_domain0=opts.report_domain0,
        )
        self._conn: libvirt.virConnect | None = None
        self._lister: DomainLister | None = None
        self._callback_ids: list[int] = []
        self._faults = faultevents.FaultCallbacks(self._hand_off)

    def connect(self, listener: base.BackendListener) -> None:
        """See :meth:`Backend.connect`."""
        eventloop.start()
        super().connect(listener)

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
        self._hand_off(dom, transitions.translate(event, detail))

    def _on_reboot(self, _conn: object, dom: libvirt.virDomain, _opaque: object) -> None:
        self._hand_off(dom, transitions.REBOOT)

    def _hand_off(
        self, dom: libvirt.virDomain, translation: transitions.Translation | FaultTranslation
    ) -> None:
        # UUIDString() and name() read the local virDomain struct: no RPC.
        self._queue.put(
            DomainEvent(dom, dom.UUIDString(), dom.name(), translation, events.utcnow())
        )

    def _on_close(self, _conn: object, reason: int, generation: int) -> None:
        self._queue.put(
            dispatch.Closed(generation, _CLOSE_REASONS.get(reason, f"reason {reason}"))
        )

    # -- the skeleton's hooks: dispatch thread -----------------------------------

    @property
    def _close_timeout(self) -> float:
        return float(self._opts.connect_timeout)

    def _lost(self, reason: str) -> str:
        return f"lost libvirt {mask_secrets(self.uri)} ({reason})"

    def _open(self) -> None:
        """Open the connection and register the callbacks."""
        try:
            conn = connection.open_connection(
                self.uri, read_only=self._opts.read_only, timeout=self._opts.connect_timeout
            )
        except (connection.ConnectTimeout, libvirt.libvirtError) as exc:
            raise dispatch.ConnectFailed(
                f"cannot connect to libvirt {mask_secrets(self.uri)}: " + describe_error(exc)
            ) from None
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
            self._callback_ids += self._faults.register(conn)
        except libvirt.libvirtError as exc:
            raise dispatch.ConnectFailed(
                f"registering libvirt callbacks on {mask_secrets(self.uri)} failed: {exc}"
            ) from None
        LOG.info("connected to libvirt %s (read-only: %s)", self.uri, self._opts.read_only)

    def _translate(self, item: dispatch.HypervisorEvent) -> base.GuestObservation | None:
        if not isinstance(item, DomainEvent):
            return super()._translate(item)
        translation = item.translation
        if isinstance(translation, FaultTranslation):
            return self._fault(item, translation)
        if translation.outcome is None:
            # A definition changed: who launched the domain may have too.
            if self._lister is not None:
                self._lister.forget(item.uuid)
            return None
        if not self._reported(item):
            return None
        transition, power_state = translation.outcome
        details: dict[str, events.Scalar] = {}
        if transition is events.Transition.CRASHED:
            # What libvirt tells of the crash is read now, while the guest may still be there.
            details = faultevents.crash_details(item.dom)
        return events.Observation(
            item.uuid,
            item.name,
            transition,
            power_state,
            translation.reason,
            translation.detail,
            occurred_at=item.occurred_at,
            details=details,
        )

    def _fault(self, item: DomainEvent, fault: FaultTranslation) -> FaultObservation | None:
        if not self._reported(item):
            return None
        return FaultObservation(
            item.uuid,
            item.name,
            fault.fault,
            fault.reason,
            fault.detail,
            occurred_at=item.occurred_at,
            details=fault.details,
        )

    def _reported(self, item: DomainEvent) -> bool:
        """Whether the ``[libvirt] report_*`` filter admits the domain of ``item``."""
        if self._lister is None:
            return True
        try:
            origin = self._lister.origin(item.dom, item.uuid)
        except libvirt.libvirtError as exc:
            # Unknown origin: better one event too many than a lost one.
            LOG.warning("cannot tell who launched %s (%s); reporting it", item.name, exc)
            return True
        if self.listing.admits(origin):
            return True
        LOG.debug("not reporting %s (launched by %s)", item.name, origin.value)
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
