"""Listing libvirt domains in one call, and their states in one more.

This is nova's blueprint *libvirt-domain-listing-speedup*: ``listAllDomains``
(libvirt >= 0.9.13) returns
every domain in one RPC, where the legacy calls (``numOfDomains``,
``listDomainsID``, ``lookupByID``, ``numOfDefinedDomains``,
``listDefinedDomains``, ``lookupByName``) take O(N) RPCs and can lose a guest
that moves between the running and defined lists while they run.

Which domains are listed follows a :class:`ListFilter`. By default, as in
the blueprint: running guests launched by nova, recognised by nova's
metadata namespace in their XML. A domain's origin needs its XML (one RPC),
so it is looked up once per domain and remembered.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
import xml.etree.ElementTree as ElementTree
from typing import Any

import libvirt

LOG = logging.getLogger(__name__)

NOVA_NAMESPACES = (
    "http://openstack.org/xmlns/libvirt/nova/1.1",
    "http://openstack.org/xmlns/libvirt/nova/1.0",
)
LIBGUESTFS_CHANNEL = "org.libguestfs.channel.0"
#: Legacy listing retries while guests keep moving between its calls.
LEGACY_ATTEMPTS = 5


class Origin(enum.Enum):
    """Who launched a domain."""

    NOVA = "nova"
    LIBGUESTFS = "libguestfs"
    #: Xen's Domain-0 (domain ID 0): the host itself, not a guest.
    DOMAIN0 = "domain0"
    OTHER = "other"


@dataclasses.dataclass(frozen=True)
class ListFilter:
    """Which domains :meth:`DomainLister.list_instance_domains` returns.

    Arguments:
        include_inactive: Also shut-off (defined, not running) domains.
        include_foreign: Also domains nova did not launch (libguestfs
            appliances, anything without nova's metadata).
        include_domain0: Also Xen's Domain-0.

    """

    include_inactive: bool = False
    include_foreign: bool = False
    include_domain0: bool = False

    def admits(self, origin: Origin) -> bool:
        """Whether a domain of ``origin`` passes this filter."""
        if origin is Origin.DOMAIN0:
            return self.include_domain0
        return origin is Origin.NOVA or self.include_foreign


class DomainLister:
    """Lists the domains of one libvirt connection (make a new one per connection).

    ``listAllDomains`` is tried first; once it proves unsupported (an old
    libvirt or binding, or a hypervisor driver without it), the legacy calls
    are used for the life of the connection.

    Arguments:
        conn: An open libvirt connection.

    """

    def __init__(self, conn: libvirt.virConnect) -> None:
        self.conn = conn
        #: True once listAllDomains proved unsupported on this connection.
        self.legacy = False
        self._legacy_stats = False
        self._origins: dict[str, Origin] = {}

    def list_instance_domains(self, listing: ListFilter | None = None) -> list[libvirt.virDomain]:
        """Return the domains that ``listing`` admits (default: running nova guests)."""
        listing = listing or ListFilter()
        domains = None if self.legacy else self._list_all(listing.include_inactive)
        if domains is None:
            domains = self._list_legacy(listing.include_inactive)
        return [dom for dom in domains if self._admits(listing, dom)]

    def list_instance_states(
        self, listing: ListFilter | None = None
    ) -> list[tuple[libvirt.virDomain, int]]:
        """Return what :meth:`list_instance_domains` returns, each with its state code.

        One ``getAllDomainStats`` RPC (the state group) lists the domains and
        reads their states at once; where it is missing, the listing falls
        back as :meth:`list_instance_domains` does, then reads the states with
        :meth:`states`.
        """
        listing = listing or ListFilter()
        if not (self.legacy or self._legacy_stats):
            flags = libvirt.VIR_CONNECT_GET_ALL_DOMAINS_STATS_ACTIVE
            if listing.include_inactive:
                flags |= libvirt.VIR_CONNECT_GET_ALL_DOMAINS_STATS_INACTIVE
            try:
                records = self.conn.getAllDomainStats(libvirt.VIR_DOMAIN_STATS_STATE, flags)
            except (AttributeError, libvirt.libvirtError) as exc:
                if not _unsupported(exc):
                    raise
                LOG.info("getAllDomainStats unsupported (%s): listing, then states", exc)
                self._legacy_stats = True
            else:
                return [
                    (dom, stats.get("state.state", 0))
                    for dom, stats in records
                    if self._admits(listing, dom)
                ]
        return self.states(self.list_instance_domains(listing))

    def states(self, domains: list[libvirt.virDomain]) -> list[tuple[libvirt.virDomain, int]]:
        """Return ``(domain, virDomainState code)`` for each domain still defined.

        One ``virDomainListGetStats`` RPC (the state group of getAllDomainStats);
        one ``virDomainGetState`` per domain where that API is missing.
        """
        if not domains:
            return []
        if not self._legacy_stats:
            try:
                records = self.conn.domainListGetStats(domains, libvirt.VIR_DOMAIN_STATS_STATE)
                return [(dom, stats.get("state.state", 0)) for dom, stats in records]
            except (AttributeError, libvirt.libvirtError) as exc:
                if not _unsupported(exc):
                    raise
                LOG.info("domainListGetStats unsupported (%s): reading states one by one", exc)
                self._legacy_stats = True
        states = []
        for dom in domains:
            state = _unless_gone(dom.state)
            if state is not None:
                states.append((dom, state[0]))
        return states

    def origin(self, dom: libvirt.virDomain, uuid: str | None = None) -> Origin:
        """Return who launched ``dom`` (of UUID ``uuid``, if known); remembered by UUID.

        Once remembered, telling it calls nothing of libvirt: a burst's events
        cost no call into the binding (each lets another thread run) here.
        """
        uuid = uuid or dom.UUIDString()
        known = self._origins.get(uuid)
        if known is None:
            # ID() reads the local virDomain struct: no RPC. The XML is read once.
            if dom.ID() == 0:
                known = Origin.DOMAIN0
            else:
                xml = _unless_gone(dom.XMLDesc, 0)
                if xml is None:
                    return Origin.OTHER
                known = origin_of_xml(xml)
            self._origins[uuid] = known
        return known

    def _admits(self, listing: ListFilter, dom: libvirt.virDomain) -> bool:
        """Whether ``listing`` admits ``dom``; its XML is read only when that decides."""
        # ID() reads the local virDomain struct: Domain-0 costs no RPC to tell.
        if dom.ID() == 0:
            return listing.include_domain0
        return listing.include_foreign or self.origin(dom) is Origin.NOVA

    def forget(self, uuid: str) -> None:
        """Drop what is remembered of a domain (it was redefined or undefined)."""
        self._origins.pop(uuid, None)

    def _list_all(self, include_inactive: bool) -> list[libvirt.virDomain] | None:
        flags = libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE
        if include_inactive:
            flags |= libvirt.VIR_CONNECT_LIST_DOMAINS_INACTIVE
        try:
            return list(self.conn.listAllDomains(flags))
        except (AttributeError, libvirt.libvirtError) as exc:
            if not _unsupported(exc):
                raise
            LOG.warning("listAllDomains unsupported (%s): using the legacy listing calls", exc)
            self.legacy = True
            return None

    def _list_legacy(self, include_inactive: bool) -> list[libvirt.virDomain]:
        """List with the pre-0.9.13 calls, listing again while guests move between them."""
        for attempt in range(1, LEGACY_ATTEMPTS + 1):
            running = self._running_ids()
            if not include_inactive:
                return self._lookup(self.conn.lookupByID, running)[0]
            names = self.conn.listDefinedDomains() if self.conn.numOfDefinedDomains() else []
            # A guest that started after the first list and before the second is
            # in neither list; the running list then differs: list again.
            running_after = self._running_ids()
            moved = running_after != running
            if moved and attempt < LEGACY_ATTEMPTS:
                continue
            # The last attempt keeps what either running list saw.
            ids = sorted(set(running) | set(running_after))
            domains, vanished = self._lookup(self.conn.lookupByID, ids)
            defined, gone = self._lookup(self.conn.lookupByName, names)
            # A guest that stopped before its lookup by ID may now be only defined.
            if not (vanished or gone or moved) or attempt == LEGACY_ATTEMPTS:
                break
        if moved or vanished or gone:
            LOG.warning("guests kept changing during %d legacy listings", LEGACY_ATTEMPTS)
        return _unique(domains + defined)

    def _running_ids(self) -> list[int]:
        # numOfDomains first: listDomainsID of old libvirt fails on an empty host.
        return sorted(self.conn.listDomainsID()) if self.conn.numOfDomains() else []

    @staticmethod
    def _lookup(lookup: Any, keys: list[Any]) -> tuple[list[libvirt.virDomain], bool]:
        """Look every key up; return the domains found and whether any had vanished."""
        found = [dom for key in keys if (dom := _unless_gone(lookup, key)) is not None]
        return found, len(found) != len(keys)


def origin_of_xml(xml: str) -> Origin:
    """Return who launched the domain described by ``xml`` (its libvirt XML)."""
    # The XML comes from libvirtd, which generated it.
    root = ElementTree.fromstring(xml)  # noqa: S314
    for namespace in NOVA_NAMESPACES:
        if root.find(f"metadata/{{{namespace}}}instance") is not None:
            return Origin.NOVA
    for target in root.iterfind("devices/channel/target"):
        if target.get("name") == LIBGUESTFS_CHANNEL:
            return Origin.LIBGUESTFS
    return Origin.OTHER


def _unsupported(exc: Exception) -> bool:
    """Whether ``exc`` says the API is missing (binding or daemon), not that it failed."""
    if isinstance(exc, AttributeError):
        return True
    return isinstance(exc, libvirt.libvirtError) and exc.get_error_code() in (
        libvirt.VIR_ERR_NO_SUPPORT,
        libvirt.VIR_ERR_RPC,  # an old daemon that does not know the procedure
    )


def _unless_gone(call: Any, *args: Any) -> Any:
    """Return ``call(*args)``, or None if the domain vanished meanwhile."""
    try:
        return call(*args)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            return None
        raise


def _unique(domains: list[libvirt.virDomain]) -> list[libvirt.virDomain]:
    """Drop repeats of a domain (by UUID), keeping the first."""
    seen: set[str] = set()
    unique = []
    for dom in domains:
        uuid = dom.UUIDString()
        if uuid not in seen:
            seen.add(uuid)
            unique.append(dom)
    return unique
