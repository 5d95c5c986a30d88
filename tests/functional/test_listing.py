"""DomainLister against the real libvirtd's test driver: both listing paths, races, states.

The daemon's test driver is shared: every assertion is restricted to this
test's own domains.
"""

from __future__ import annotations

import collections
from collections.abc import Callable

import libvirt
import pytest

from hypervisor_notifier.backends.libvirt.listing import DomainLister, ListFilter
from tests.libvirt_factories import libvirt_error

from .conftest import LIBGUESTFS_CHANNEL, LIBVIRT_URI, NOVA_METADATA, domain_xml, unique

RUNNING, PAUSED, SHUTOFF = 1, 3, 5  # virDomainState codes
NOVA_1_0_METADATA = NOVA_METADATA.replace("nova/1.1", "nova/1.0")

#: role -> (what its XML carries instead of nova's metadata, its state)
FLEET = {
    "nova": (NOVA_METADATA, RUNNING),
    "nova-paused": (NOVA_METADATA, PAUSED),
    "nova-1.0": (NOVA_1_0_METADATA, RUNNING),
    "nova-off": (NOVA_METADATA, SHUTOFF),
    "libguestfs": (LIBGUESTFS_CHANNEL, RUNNING),
    "plain": ("", RUNNING),
    "plain-off": ("", SHUTOFF),
}
NOVA_ACTIVE = ["nova", "nova-1.0", "nova-paused"]
FILTERS = [  # (filter, the roles it lists)
    (ListFilter(), NOVA_ACTIVE),
    (ListFilter(include_inactive=True), [*NOVA_ACTIVE, "nova-off"]),
    (ListFilter(include_foreign=True), [*NOVA_ACTIVE, "libguestfs", "plain"]),
    (ListFilter(include_inactive=True, include_foreign=True), list(FLEET)),
]
FILTER_IDS = ["default", "inactive", "foreign", "inactive-foreign"]
EVERYTHING = ListFilter(include_inactive=True, include_foreign=True)


class Proxy:
    """A libvirt connection that counts the calls made through it.

    The call it ``lacks`` fails ``like`` an old binding (AttributeError) or an
    old driver (VIR_ERR_NO_SUPPORT) would; ``after["name#n"]`` runs right
    after the n-th ``name`` call returns.
    """

    def __init__(
        self, conn: libvirt.virConnect, lacks: str = "", like: str | None = "old-binding"
    ) -> None:
        self._conn = conn
        self._lacks = {lacks: like}
        self.calls: collections.Counter[str] = collections.Counter()
        self.after: dict[str, Callable[[], object]] = {}

    def __getattr__(self, name: str) -> Callable[..., object]:
        kind = self._lacks.get(name)
        if kind == "old-binding":
            self.calls[name] += 1
            raise AttributeError(f"'virConnect' object has no attribute '{name}'")
        method = getattr(self._conn, name)

        def call(*args: object) -> object:
            self.calls[name] += 1
            if kind == "old-driver":
                raise libvirt_error(libvirt.VIR_ERR_NO_SUPPORT)
            result = method(*args)
            hook = self.after.pop(f"{name}#{self.calls[name]}", None)
            if hook is not None:
                hook()
            return result

        return call


UNSUPPORTED = ["old-binding", "old-driver"]


@pytest.fixture(scope="module")
def conn():
    """The lister's own connection; tests act on domains through ``hypervisor``."""
    conn = libvirt.open(LIBVIRT_URI)
    yield conn
    conn.close()


def put_in_state(dom: libvirt.virDomain, state: int) -> libvirt.virDomain:
    if state != SHUTOFF:
        dom.create()
    if state == PAUSED:
        dom.suspend()
    return dom


@pytest.fixture
def fleet(make_domain):
    """One domain of each FLEET role: role -> domain."""
    return {
        role: put_in_state(make_domain(extra), state) for role, (extra, state) in FLEET.items()
    }


@pytest.fixture
def make_vanishing(hypervisor):
    """Domains a test removes itself: running ones transient, others defined; cleaned if left."""
    made = []

    def make(running: bool) -> libvirt.virDomain:
        xml = domain_xml(unique("hn-gone"))
        dom = hypervisor.createXML(xml) if running else hypervisor.defineXML(xml)
        made.append(dom.name())
        return dom

    yield make
    for name in made:
        try:
            dom = hypervisor.lookupByName(name)
        except libvirt.libvirtError:
            continue
        if dom.isActive():
            dom.destroy()
        if dom.isPersistent():
            dom.undefine()


def roles(listed, fleet) -> list[str]:
    """The roles of ``fleet`` among ``listed``, sorted, repeats kept; other domains ignored."""
    role_of = {dom.UUIDString(): role for role, dom in fleet.items()}
    return sorted(role_of[dom.UUIDString()] for dom in listed if dom.UUIDString() in role_of)


# -- which domains are listed ------------------------------------------------------------------


@pytest.mark.parametrize(("listing", "expected"), FILTERS, ids=FILTER_IDS)
def test_list_all_domains_lists_exactly_the_filtered_domains(conn, fleet, listing, expected):
    lister = DomainLister(conn)

    assert roles(lister.list_instance_domains(listing), fleet) == sorted(expected)
    assert not lister.legacy


@pytest.mark.parametrize("unsupported", UNSUPPORTED)
@pytest.mark.parametrize(("listing", "expected"), FILTERS, ids=FILTER_IDS)
def test_the_legacy_calls_list_what_list_all_domains_lists(
    conn, fleet, listing, expected, unsupported
):
    legacy = DomainLister(Proxy(conn, "listAllDomains", unsupported))

    listed = roles(legacy.list_instance_domains(listing), fleet)

    assert legacy.legacy
    assert listed == roles(DomainLister(conn).list_instance_domains(listing), fleet)
    assert listed == sorted(expected)


@pytest.mark.parametrize("unsupported", UNSUPPORTED)
def test_once_unsupported_list_all_domains_is_not_tried_again(conn, fleet, unsupported):
    proxy = Proxy(conn, "listAllDomains", unsupported)
    lister = DomainLister(proxy)

    for _ in range(3):
        assert roles(lister.list_instance_domains(EVERYTHING), fleet) == sorted(FLEET)
        assert lister.legacy
    assert proxy.calls["listAllDomains"] == 1


# -- races of the legacy calls ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "after", "change"),
    [
        (SHUTOFF, "listDomainsID#1", "create"),  # legacy race: started between lists
        (SHUTOFF, "listDefinedDomains#1", "create"),
        (RUNNING, "listDomainsID#1", "destroy"),  # stopped between the lists
        (RUNNING, "listDomainsID#2", "destroy"),  # stopped before its lookup by ID
    ],
    ids=[
        "started-after-running-list",
        "started-after-defined-list",
        "stopped-after-running-list",
        "stopped-before-lookup",
    ],
)
def test_a_guest_changing_state_mid_legacy_listing_is_still_listed_once(
    conn, make_domain, state, after, change
):
    dom = put_in_state(make_domain(), state)
    proxy = Proxy(conn, "listAllDomains")
    proxy.after[after] = getattr(dom, change)  # dom's connection is another client

    listed = DomainLister(proxy).list_instance_domains(ListFilter(include_inactive=True))

    assert not proxy.after, "the guest did not change mid-listing"
    assert roles(listed, {"guest": dom}) == ["guest"]


@pytest.mark.parametrize(
    ("running", "after", "listing"),
    [
        (True, "listDomainsID#1", ListFilter()),
        (True, "listDomainsID#1", ListFilter(include_inactive=True)),
        (False, "listDefinedDomains#1", ListFilter(include_inactive=True)),
    ],
    ids=["transient-destroyed", "transient-destroyed-inactive", "undefined"],
)
def test_a_guest_vanishing_before_its_lookup_is_not_listed(
    conn, make_vanishing, running, after, listing
):
    dom = make_vanishing(running)
    proxy = Proxy(conn, "listAllDomains")
    proxy.after[after] = dom.destroy if running else dom.undefine

    listed = DomainLister(proxy).list_instance_domains(listing)

    assert not proxy.after, "the guest did not vanish mid-listing"
    assert roles(listed, {"gone": dom}) == []


# -- states --------------------------------------------------------------------------------------


def fleet_states(lister: DomainLister, fleet) -> dict[str, int]:
    role_of = {dom.UUIDString(): role for role, dom in fleet.items()}
    return {role_of[dom.UUIDString()]: code for dom, code in lister.states(list(fleet.values()))}


def test_states_reads_every_state_in_one_call(conn, fleet):
    proxy = Proxy(conn)

    assert fleet_states(DomainLister(proxy), fleet) == {
        role: state for role, (_, state) in FLEET.items()
    }
    assert proxy.calls == {"domainListGetStats": 1}


@pytest.mark.parametrize("unsupported", UNSUPPORTED)
def test_states_without_domain_list_get_stats_reads_the_same_states(conn, fleet, unsupported):
    proxy = Proxy(conn, "domainListGetStats", unsupported)
    lister = DomainLister(proxy)
    expected = {role: state for role, (_, state) in FLEET.items()}

    assert fleet_states(lister, fleet) == expected
    assert fleet_states(lister, fleet) == expected
    assert proxy.calls["domainListGetStats"] == 1


def listed_states(lister: DomainLister, listing: ListFilter, fleet) -> dict[str, int]:
    role_of = {dom.UUIDString(): role for role, dom in fleet.items()}
    return {
        role_of[dom.UUIDString()]: code
        for dom, code in lister.list_instance_states(listing)
        if dom.UUIDString() in role_of
    }


@pytest.mark.parametrize(("listing", "expected"), FILTERS, ids=FILTER_IDS)
def test_list_instance_states_lists_the_filtered_domains_and_states_in_one_call(
    conn, fleet, listing, expected
):
    lister = DomainLister(conn)
    lister.list_instance_domains(EVERYTHING)  # learn who launched each domain
    proxy = Proxy(conn)
    lister.conn = proxy

    assert listed_states(lister, listing, fleet) == {role: FLEET[role][1] for role in expected}
    assert proxy.calls == {"getAllDomainStats": 1}


@pytest.mark.parametrize("unsupported", UNSUPPORTED)
@pytest.mark.parametrize(("listing", "expected"), FILTERS, ids=FILTER_IDS)
def test_list_instance_states_without_get_all_domain_stats_lists_the_same(
    conn, fleet, listing, expected, unsupported
):
    proxy = Proxy(conn, "getAllDomainStats", unsupported)
    lister = DomainLister(proxy)

    assert listed_states(lister, listing, fleet) == {role: FLEET[role][1] for role in expected}
    assert listed_states(lister, listing, fleet) == {role: FLEET[role][1] for role in expected}
    assert proxy.calls["getAllDomainStats"] == 1  # not tried again on this connection


def test_including_foreign_domains_reads_no_domain_xml(conn, fleet):
    lister = DomainLister(conn)
    listed = lister.list_instance_domains(EVERYTHING)

    assert roles(listed, fleet) == sorted(FLEET)
    # Who launched them did not matter: no XML was read (its cache is empty).
    assert lister._origins == {}


@pytest.mark.parametrize("unsupported", [None, *UNSUPPORTED], ids=["supported", *UNSUPPORTED])
def test_states_skips_a_domain_undefined_since_its_listing(
    conn, make_domain, make_vanishing, unsupported
):
    kept, gone = put_in_state(make_domain(), RUNNING), make_vanishing(running=False)
    lister = DomainLister(Proxy(conn, "domainListGetStats", unsupported))
    mine = {kept.UUIDString(), gone.UUIDString()}
    listed = [dom for dom in lister.list_instance_domains(EVERYTHING) if dom.UUIDString() in mine]
    gone.undefine()

    assert [(dom.name(), code) for dom, code in lister.states(listed)] == [(kept.name(), RUNNING)]


# -- RPCs: O(1) with listAllDomains, O(N) without -----------------------------------------------


def test_list_all_domains_takes_one_call_where_the_legacy_calls_grow_with_the_domains(
    conn, make_domain
):
    fast = DomainLister(Proxy(conn))
    slow = DomainLister(Proxy(conn, "listAllDomains"))

    def calls(lister: DomainLister) -> tuple[int, int]:
        """(connection calls of a listing of every domain, domains listed)."""
        # Not counted: the first listing (a lister reads each new domain's XML once,
        # for its origin; the legacy lister tries listAllDomains once).
        lister.list_instance_domains(EVERYTHING)
        lister.conn.calls.clear()
        listed = lister.list_instance_domains(EVERYTHING)
        return sum(lister.conn.calls.values()), len(listed)

    fast_before, slow_before = calls(fast)[0], calls(slow)
    for _ in range(5):
        make_domain()
    fast_after, slow_after = calls(fast)[0], calls(slow)

    assert fast_before == fast_after == 1
    for slow_calls, listed in (slow_before, slow_after):
        assert slow_calls >= 2 + listed  # the lists, then one lookup per domain
    assert slow_after[0] >= slow_before[0] + 5
