"""DomainLister, ListFilter and origin_of_xml against a fake libvirt connection."""

from __future__ import annotations

import collections
import dataclasses
import itertools
import uuid

import libvirt
import pytest

from hypervisor_notifier.backends.libvirt.listing import (
    DomainLister,
    ListFilter,
    Origin,
    origin_of_xml,
)
from tests.libvirt_factories import libvirt_error

RUNNING, PAUSED, SHUTOFF = 1, 3, 5  # virDomainState codes


def domain_xml(extra: str = "") -> str:
    return f"<domain type='test'><name>guest</name><memory>8192</memory>{extra}</domain>"


def metadata(namespace: str, prefix: str = "nova") -> str:
    return (
        f"<metadata><{prefix}:instance xmlns:{prefix}='{namespace}'>"
        f"<{prefix}:name>server</{prefix}:name></{prefix}:instance></metadata>"
    )


NOVA_XML = domain_xml(metadata("http://openstack.org/xmlns/libvirt/nova/1.1"))
PLAIN_XML = domain_xml()
LIBGUESTFS_XML = domain_xml(
    "<devices><channel type='unix'><source mode='bind' path='/tmp/guestfsd.sock'/>"
    "<target type='virtio' name='org.libguestfs.channel.0'/></channel></devices>"
)


# -- a fake connection -----------------------------------------------------------------


@dataclasses.dataclass
class Guest:
    """A domain as the daemon knows it; ``id`` -1 when shut off."""

    name: str
    xml: str = NOVA_XML
    id: int = -1
    state: int = SHUTOFF
    uuid: str = dataclasses.field(default_factory=lambda: str(uuid.uuid4()))
    xml_reads: int = 0


class FakeDomain:
    """A virDomain handle; every lookup makes a fresh one, as libvirt does."""

    def __init__(self, guest: Guest) -> None:
        self.guest = guest

    def ID(self):
        return self.guest.id

    def UUIDString(self):
        return self.guest.uuid

    def name(self):
        return self.guest.name

    def XMLDesc(self, flags=0):
        self.guest.xml_reads += 1
        return self.guest.xml

    def state(self, flags=0):
        return [self.guest.state, 0]


class FakeConnection:
    """libvirt's listing calls over some guests, counting the calls made."""

    def __init__(self, *guests: Guest) -> None:
        self.guests = list(guests)
        self.calls: collections.Counter[str] = collections.Counter()
        #: name -> error raised by that call
        self.errors: dict[str, libvirt.libvirtError] = {}

    def _call(self, name):
        self.calls[name] += 1
        if name in self.errors:
            raise self.errors[name]

    def _running(self):
        return [guest for guest in self.guests if guest.id >= 0]

    def _defined(self):
        return [guest for guest in self.guests if guest.id < 0]

    def listAllDomains(self, flags=0):
        self._call("listAllDomains")
        guests = []
        if flags & libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE:
            guests += self._running()
        if flags & libvirt.VIR_CONNECT_LIST_DOMAINS_INACTIVE:
            guests += self._defined()
        return [FakeDomain(guest) for guest in guests]

    def numOfDomains(self):
        self._call("numOfDomains")
        return len(self._running())

    def listDomainsID(self):
        self._call("listDomainsID")
        return [guest.id for guest in self._running()]

    def numOfDefinedDomains(self):
        self._call("numOfDefinedDomains")
        return len(self._defined())

    def listDefinedDomains(self):
        self._call("listDefinedDomains")
        return [guest.name for guest in self._defined()]

    def lookupByID(self, id_):
        return self._lookup("lookupByID", [g for g in self._running() if g.id == id_])

    def lookupByName(self, name):
        return self._lookup("lookupByName", [g for g in self.guests if g.name == name])

    def _lookup(self, call, found):
        self._call(call)
        if not found:
            raise libvirt_error(libvirt.VIR_ERR_NO_DOMAIN)
        return FakeDomain(found[0])

    def domainListGetStats(self, doms, stats=0, flags=0):
        self._call("domainListGetStats")
        return [(dom, {"state.state": dom.guest.state}) for dom in doms]


class OldBindingConnection(FakeConnection):
    """A binding older than listAllDomains (0.9.13) and domainListGetStats (1.2.8)."""

    def _missing(self, name):
        self.calls[name] += 1  # counts the attempts
        raise AttributeError(f"'virConnect' object has no attribute '{name}'")

    listAllDomains = property(lambda self: self._missing("listAllDomains"))
    domainListGetStats = property(lambda self: self._missing("domainListGetStats"))


def refusing(code: int):
    """Build connections whose driver or daemon refuses the newer calls with ``code``."""

    def build(*guests: Guest) -> FakeConnection:
        conn = FakeConnection(*guests)
        for call in ("listAllDomains", "domainListGetStats"):
            conn.errors[call] = libvirt_error(code)
        return conn

    return build


#: How a connection can lack the newer calls: name -> build(*guests) -> connection
LEGACY = {
    "old-binding": OldBindingConnection,
    "driver-without-them": refusing(libvirt.VIR_ERR_NO_SUPPORT),
    "daemon-without-them": refusing(libvirt.VIR_ERR_RPC),  # "unknown procedure"
}
BOTH_PATHS = {"listAllDomains": FakeConnection, **LEGACY}


def names(domains) -> list[str]:
    return sorted(dom.name() for dom in domains)


# -- origin_of_xml -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("xml", "origin"),
    [
        (NOVA_XML, Origin.NOVA),
        (domain_xml(metadata("http://openstack.org/xmlns/libvirt/nova/1.0")), Origin.NOVA),
        (domain_xml(metadata("http://openstack.org/xmlns/libvirt/nova/1.1", "n")), Origin.NOVA),
        (LIBGUESTFS_XML, Origin.LIBGUESTFS),
        (PLAIN_XML, Origin.OTHER),
        (domain_xml(metadata("http://example.org/xmlns/other/1.0")), Origin.OTHER),
    ],
    ids=["nova-1.1", "nova-1.0", "nova-other-prefix", "libguestfs", "plain", "other-metadata"],
)
def test_origin_of_xml(xml, origin):
    assert origin_of_xml(xml) is origin


# -- ListFilter ----------------------------------------------------------------------------

ALL_FILTERS = [ListFilter(*flags) for flags in itertools.product((False, True), repeat=3)]


@pytest.mark.parametrize(
    ("origin", "admitted_by"),
    [
        (Origin.NOVA, None),  # always
        (Origin.LIBGUESTFS, "include_foreign"),
        (Origin.OTHER, "include_foreign"),
        (Origin.DOMAIN0, "include_domain0"),
    ],
    ids=lambda value: getattr(value, "name", value),
)
@pytest.mark.parametrize("listing", ALL_FILTERS, ids=repr)
def test_list_filter_admits(origin, admitted_by, listing):
    assert listing.admits(origin) is (admitted_by is None or getattr(listing, admitted_by))


def test_the_default_filter_is_running_nova_guests_only():
    assert ListFilter() == ListFilter(
        include_inactive=False, include_foreign=False, include_domain0=False
    )


@pytest.mark.parametrize("make_conn", BOTH_PATHS.values(), ids=BOTH_PATHS.keys())
def test_by_default_only_running_nova_guests_are_listed(make_conn):
    conn = make_conn(
        Guest("nova", id=1, state=RUNNING),
        Guest("nova-off"),
        Guest("guestfs", LIBGUESTFS_XML, id=2, state=RUNNING),
        Guest("plain", PLAIN_XML, id=3, state=RUNNING),
    )

    assert names(DomainLister(conn).list_instance_domains()) == ["nova"]


# -- Xen's Domain-0 --------------------------------------------------------------------------


@pytest.mark.parametrize("make_conn", BOTH_PATHS.values(), ids=BOTH_PATHS.keys())
@pytest.mark.parametrize(
    ("listing", "listed"),
    [
        (ListFilter(), ["nova"]),
        (ListFilter(include_foreign=True), ["nova"]),
        (ListFilter(include_domain0=True), ["Domain-0", "nova"]),
        (ListFilter(include_foreign=True, include_domain0=True), ["Domain-0", "nova"]),
    ],
    ids=["default", "foreign", "domain0", "foreign-domain0"],
)
def test_xen_domain0_is_listed_only_when_asked_for(make_conn, listing, listed):
    # Domain-0's XML has no nova metadata: only its ID 0 tells it from a foreign guest.
    conn = make_conn(
        Guest("Domain-0", PLAIN_XML, id=0, state=RUNNING), Guest("nova", id=7, state=RUNNING)
    )

    assert names(DomainLister(conn).list_instance_domains(listing)) == listed


# -- origins are read once --------------------------------------------------------------------


def test_origin_reads_a_domains_xml_once_per_uuid_until_forgotten():
    guest = Guest("nova", id=1, state=RUNNING)
    lister = DomainLister(FakeConnection(guest))

    for _ in range(3):  # a fresh handle each time, as every listing returns
        assert lister.origin(FakeDomain(guest)) is Origin.NOVA
    assert guest.xml_reads == 1

    lister.forget(guest.uuid)
    guest.xml = PLAIN_XML  # redefined without nova's metadata
    assert lister.origin(FakeDomain(guest)) is Origin.OTHER
    assert guest.xml_reads == 2


def test_a_remembered_origin_is_told_without_calling_libvirt():
    guest = Guest("nova", id=1, state=RUNNING)
    lister = DomainLister(FakeConnection(guest))
    assert lister.origin(FakeDomain(guest), guest.uuid) is Origin.NOVA
    # A handle with no method at all: any call into the binding would raise.
    assert lister.origin(object(), guest.uuid) is Origin.NOVA


def test_repeated_listings_read_each_domains_xml_once():
    guests = [Guest(f"guest-{n}", id=n, state=RUNNING) for n in range(1, 4)]
    lister = DomainLister(FakeConnection(*guests))

    for _ in range(3):
        assert len(lister.list_instance_domains()) == 3

    assert [guest.xml_reads for guest in guests] == [1, 1, 1]


# -- listAllDomains, or the legacy calls --------------------------------------------------------


@pytest.mark.parametrize("make_conn", LEGACY.values(), ids=LEGACY.keys())
def test_an_unsupported_list_all_domains_switches_to_the_legacy_calls_for_good(make_conn):
    conn = make_conn(Guest("nova", id=1, state=RUNNING), Guest("nova-off"))
    lister = DomainLister(conn)
    everything = ListFilter(include_inactive=True)

    assert names(lister.list_instance_domains(everything)) == ["nova", "nova-off"]
    assert names(lister.list_instance_domains(everything)) == ["nova", "nova-off"]
    assert lister.legacy
    assert conn.calls["listAllDomains"] == 1
    assert conn.calls["lookupByID"] == conn.calls["lookupByName"] == 2


@pytest.mark.parametrize(
    "code",
    [libvirt.VIR_ERR_SYSTEM_ERROR, libvirt.VIR_ERR_INTERNAL_ERROR, libvirt.VIR_ERR_AUTH_FAILED],
    ids=["system-error", "internal-error", "auth-failed"],
)
def test_a_failing_list_all_domains_raises_and_is_tried_again_next_time(code):
    conn = FakeConnection(Guest("nova", id=1, state=RUNNING))
    conn.errors["listAllDomains"] = libvirt_error(code)
    lister = DomainLister(conn)

    with pytest.raises(libvirt.libvirtError) as excinfo:
        lister.list_instance_domains()

    assert excinfo.value.get_error_code() == code
    assert not lister.legacy
    assert conn.calls["listDomainsID"] == 0
    del conn.errors["listAllDomains"]  # the daemon is back
    assert names(lister.list_instance_domains()) == ["nova"]
    assert conn.calls["listAllDomains"] == 2
    assert conn.calls["listDomainsID"] == 0


class RestartingGuestConnection(OldBindingConnection):
    """One guest restarts (a new domain ID) between every two ``listDomainsID`` calls."""

    def listDomainsID(self):
        restarting = self.guests[-1]
        restarting.id += 1
        return super().listDomainsID()


def test_a_legacy_listing_under_constant_churn_still_lists_the_steady_guests():
    conn = RestartingGuestConnection(
        Guest("steady", id=1, state=RUNNING),
        Guest("steady-off"),
        Guest("restarting", PLAIN_XML, id=100, state=RUNNING),
    )

    listed = DomainLister(conn).list_instance_domains(ListFilter(include_inactive=True))

    assert {"steady", "steady-off"} <= set(names(listed))


# -- states -------------------------------------------------------------------------------------


@pytest.mark.parametrize("make_conn", BOTH_PATHS.values(), ids=BOTH_PATHS.keys())
def test_states_gives_each_domains_state_code(make_conn):
    conn = make_conn(
        Guest("running", id=1, state=RUNNING), Guest("paused", id=2, state=PAUSED), Guest("off")
    )
    lister = DomainLister(conn)
    domains = [FakeDomain(guest) for guest in conn.guests]

    for _ in range(2):
        assert [(dom.name(), code) for dom, code in lister.states(domains)] == [
            ("running", RUNNING),
            ("paused", PAUSED),
            ("off", SHUTOFF),
        ]
    # Once unsupported, domainListGetStats is not tried again.
    assert conn.calls["domainListGetStats"] == (2 if make_conn is FakeConnection else 1)


def test_a_failing_domain_list_get_stats_raises_and_is_tried_again_next_time():
    conn = FakeConnection(Guest("running", id=1, state=RUNNING))
    conn.errors["domainListGetStats"] = libvirt_error(libvirt.VIR_ERR_SYSTEM_ERROR)
    lister = DomainLister(conn)
    domains = [FakeDomain(conn.guests[0])]

    with pytest.raises(libvirt.libvirtError):
        lister.states(domains)

    del conn.errors["domainListGetStats"]
    assert [code for _, code in lister.states(domains)] == [RUNNING]
    assert conn.calls["domainListGetStats"] == 2


def test_states_of_no_domains_makes_no_call():
    conn = FakeConnection()

    assert DomainLister(conn).states([]) == []
    assert not conn.calls
