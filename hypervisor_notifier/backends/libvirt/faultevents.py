"""The libvirt backend's guest fault callbacks, and what it reads of a crash.

Each callback runs in libvirt's event-loop thread and only hands its
translation (:mod:`.faultcodes`, pure) to the backend, which queues it as a
``DomainEvent`` like a lifecycle event's: the filters and ``on_events`` run
in the dispatch thread.

The event IDs are registered where the binding and the daemon have them: a
binding without a constant, or a daemon that refuses the ID (older than the
event), costs that fault only, logged once per connection; the connection
and every other event go on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import libvirt

from hypervisor_notifier.backends.libvirt import faultcodes, transitions
from hypervisor_notifier.backends.libvirt.faultcodes import FaultTranslation
from hypervisor_notifier.events import Scalar

LOG = logging.getLogger(__name__)

#: libvirt's answer to an event ID it does not know (a client or daemon older than it).
_UNKNOWN_EVENT_ERRORS = (libvirt.VIR_ERR_NO_SUPPORT, libvirt.VIR_ERR_INVALID_ARG)


class FaultCallbacks:
    """libvirt's fault callbacks of one backend: each hands its translation off.

    Arguments:
        hand_off: Puts the domain's event on the backend's dispatch queue
            (thread-safe, never blocks, no RPC).

    """

    def __init__(self, hand_off: Callable[[libvirt.virDomain, FaultTranslation], None]) -> None:
        self._hand_off = hand_off

    def _queue(self, dom: libvirt.virDomain, translation: FaultTranslation | None) -> None:
        if translation is not None:
            self._hand_off(dom, translation)

    # libvirt's callbacks: (conn, dom, <the event's arguments>, opaque).

    def _on_watchdog(
        self, _conn: object, dom: libvirt.virDomain, action: int, _op: object
    ) -> None:
        self._queue(dom, faultcodes.watchdog(action))

    def _on_io_error_reason(
        self, _conn: object, dom: libvirt.virDomain, path: str, alias: str, action: int,
        error: str, _op: object,
    ) -> None:  # fmt: skip
        # A network disk has no path: libvirt hands None.
        self._queue(dom, faultcodes.io_error(path or "", alias or "", action, error or ""))

    def _on_io_error(
        self, _conn: object, dom: libvirt.virDomain, path: str, alias: str, action: int,
        _op: object,
    ) -> None:  # fmt: skip
        self._queue(dom, faultcodes.io_error(path or "", alias or "", action, None))

    def _on_control_error(self, _conn: object, dom: libvirt.virDomain, _op: object) -> None:
        self._queue(dom, faultcodes.control_error())

    def _on_agent_lifecycle(
        self, _conn: object, dom: libvirt.virDomain, state: int, reason: int, _op: object
    ) -> None:
        self._queue(dom, faultcodes.agent_lifecycle(state, reason))

    def _on_memory_failure(
        self, _conn: object, dom: libvirt.virDomain, recipient: int, action: int, flags: int,
        _op: object,
    ) -> None:  # fmt: skip
        self._queue(dom, faultcodes.memory_failure(recipient, action, flags))

    def _on_device_removed(
        self, _conn: object, dom: libvirt.virDomain, alias: str, _op: object
    ) -> None:
        self._queue(dom, faultcodes.device_removed(alias))

    def _on_device_removal_failed(
        self, _conn: object, dom: libvirt.virDomain, alias: str, _op: object
    ) -> None:
        self._queue(dom, faultcodes.device_removal_failed(alias))

    def register(self, conn: libvirt.virConnect) -> list[int]:
        """Register every fault callback this binding and daemon have; return their IDs.

        Raises:
            libvirt.libvirtError: a registration failed for another reason (the
                connection broke): the caller connects again.

        """
        wanted: dict[str, Callable[..., None]] = {
            "WATCHDOG": self._on_watchdog,
            "IO_ERROR_REASON": self._on_io_error_reason,
            "CONTROL_ERROR": self._on_control_error,
            "AGENT_LIFECYCLE": self._on_agent_lifecycle,
            "MEMORY_FAILURE": self._on_memory_failure,
            "DEVICE_REMOVED": self._on_device_removed,
            "DEVICE_REMOVAL_FAILED": self._on_device_removal_failed,
        }
        ids = []
        for event, callback in wanted.items():
            callback_id = _register(conn, event, callback)
            if callback_id is None and event == "IO_ERROR_REASON":
                # IO_ERROR says the same without why; libvirt sends both, so only one.
                callback_id = _register(conn, "IO_ERROR", self._on_io_error)
            if callback_id is not None:
                ids.append(callback_id)
        return ids


def _register(conn: libvirt.virConnect, event: str, callback: Callable[..., None]) -> int | None:
    """Register ``callback`` for ``VIR_DOMAIN_EVENT_ID_<event>``; None where it is unknown."""
    event_id = getattr(libvirt, f"VIR_DOMAIN_EVENT_ID_{event}", None)
    if event_id is None:
        LOG.warning("libvirt-python %s has no %s event: not reported", libvirt_version(), event)
        return None
    try:
        return conn.domainEventRegisterAny(None, event_id, callback, None)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() not in _UNKNOWN_EVENT_ERRORS:
            raise
        LOG.warning("libvirt refuses the %s event (%s): not reported", event, exc)
        return None


def libvirt_version() -> str:
    """The libvirt client library's version, ``major.minor.micro``."""
    version = libvirt.getVersion()
    return f"{version // 1000000}.{version // 1000 % 1000}.{version % 1000}"


def state_names(state: int, reason: int) -> tuple[str, str]:
    """The lower-case names libvirt gives a ``virDomainState`` and its reason.

    Only the states a crash leaves a guest in have their reasons named (from
    the binding's ``VIR_DOMAIN_<STATE>_<REASON>`` constants; other states'
    clash with other constants); another reason, or a code the binding does
    not know, is ``reason_<n>``.
    """
    state_name = transitions.state(state)[0].lower()
    prefix = f"VIR_DOMAIN_{state_name.upper()}_"
    names = [
        n.removeprefix(prefix).lower()
        for n in dir(libvirt)
        if state_name in _CRASH_OUTCOMES and n.startswith(prefix) and getattr(libvirt, n) == reason
    ]
    return state_name, names[0] if names else f"reason_{reason}"


#: The states a crashed guest is in (preserved, destroyed, restarted, paused for a dump).
_CRASH_OUTCOMES = ("crashed", "shutoff", "running", "paused")


def crash_details(dom: libvirt.virDomain) -> dict[str, Scalar]:
    """What libvirt tells of ``dom``'s crash now (:func:`.faultcodes.crash_details`).

    Two RPCs (state and XML). A guest destroyed meanwhile (``on_crash`` destroy
    of a transient guest) has none: its keys are absent.
    """
    xml: str | None = None
    state: tuple[str, str] | tuple[None, None] = (None, None)
    try:
        code, reason = dom.state()
        state = state_names(code, reason)
        xml = dom.XMLDesc(0)
    except libvirt.libvirtError as exc:
        LOG.info("cannot read the crash of %s (%s)", dom.name(), exc)
    return faultcodes.crash_details(xml, *state)
