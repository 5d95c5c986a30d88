"""A broker that goes away or refuses us: nothing lost, nothing repeated, and /healthz says why.

The broker that goes away is a private node of this module's own: ``stop_app``
on the shared one would cut off every other test running on the machine.
Each test prints its counts (visible with ``pytest -s``).
"""

from __future__ import annotations

import json
import socket
import time

import pytest

from tests.service_process import healthz

from .conftest import private_node
from .faults import (
    AFTER,
    Burst,
    assert_no_duplicate_delivered,
    assert_seq_increasing,
    broker_stopped,
    metrics,
    real_power_state,
    running_domains,
    sentinel_received,
    wait_for_health,
    wait_until,
)


@pytest.fixture(scope="module")
def private_broker(tmp_path_factory: pytest.TempPathFactory):
    """Overrides conftest's session-wide node: this module's own, as it is stopped here."""
    yield from private_node(tmp_path_factory, tls=False)


def test_broker_outage_mid_burst_loses_nothing_and_duplicates_nothing(
    private_broker, private_names, make_domain, start_service, subscribe
):
    domains = running_domains(make_domain, 8)
    uuids = [d.UUIDString() for d in domains]
    subscriber, collector = subscribe(transport_url=private_broker.url)
    service = start_service(transport_url=private_broker.url)
    port = service.health_port
    for uuid in uuids:  # the start snapshot: running
        collector.wait_for(lambda e, uuid=uuid: e.instance_uuid == uuid)

    # About 0.6 ms a call. The broker stops after 600 calls, starts again after 600
    # more, and the burst goes on for 600 calls once the broker is back.
    burst = Burst(domains, calls=10**6, pace=0.0003)
    started = time.monotonic()
    burst.start()
    try:
        burst.wait_count(600)
        calls = {"stop_app": burst.count}
        with broker_stopped(private_broker):
            calls["stopped"] = burst.count
            burst.wait_count(calls["stopped"] + 600)
            calls["start_app"] = burst.count
        back = time.monotonic()
        calls["started"] = burst.count
        burst.calls = max(3000, burst.count + 600)
    finally:
        burst.calls = min(burst.calls, burst.count + 600)
        burst.finish()
    burst_seconds = time.monotonic() - started

    def all_received() -> bool:
        return all(len(collector.of(u, resync=False)) >= len(burst.expected[u]) for u in uuids)

    wait_until(all_received, what="every burst event received")
    drained = time.monotonic() - back
    sentinel_received(make_domain, collector)

    for uuid in uuids:
        assert [e.transition for e in collector.of(uuid, resync=False)] == burst.expected[uuid]
        assert [e.power_state for e in collector.of(uuid, resync=False)] == [
            AFTER[t] for t in burst.expected[uuid]
        ]
        assert collector.of(uuid, resync=False)[-1].power_state is real_power_state(
            domains[uuids.index(uuid)]
        )
    assert_seq_increasing(collector, uuids)
    assert_no_duplicate_delivered(collector)

    sample: dict[str, float] = {}

    def settled() -> bool:
        # Once nothing waits, every message sent was either confirmed or sent again.
        sample.update(metrics(port))
        return sample["hypervisor_notifier_outbox_depth"] == 0 and (
            sample["hypervisor_notifier_events_published_total"]
            == sample["hypervisor_notifier_events_confirmed_total"]
            + sample["hypervisor_notifier_events_resent_total"]
        )

    wait_until(settled, what=lambda: f"published == confirmed + resent: {sample}")
    resent = sample["hypervisor_notifier_events_resent_total"]
    generated = sum(len(calls) for calls in burst.expected.values())
    received = sum(len(collector.of(u, resync=False)) for u in uuids)
    print(
        f"\nbroker outage: {generated} events generated in {burst_seconds:.1f} s "
        f"(calls made at each step: {calls}); {received} received; "
        f"{subscriber.stats.duplicates} duplicates filtered, {subscriber.stats.stale} stale; "
        f"{resent:.0f} publisher resends (events_resent_total), "
        f"{sample['hypervisor_notifier_events_published_total']:.0f} published, "
        f"{sample['hypervisor_notifier_events_confirmed_total']:.0f} confirmed; "
        f"drained {drained:.2f} s after start_app"
    )
    assert generated == burst.calls >= 3000
    assert received == generated
    assert subscriber.stats.stale == 0
    # The publisher did see the outage.
    assert "lost broker" in service.log or "cannot publish" in service.log, service.log
    assert wait_for_health(port, 200)["problems"] == []


def test_health_reports_a_refusing_broker_without_the_password(start_service):
    password = "Sekr1t-pw-4711"
    service = start_service(
        transport_url=f"rabbit://hn-no-such-user:{password}@127.0.0.1:5672/",
        # Nothing can be confirmed: do not wait 10 s for it at the stop.
        DEFAULT={"shutdown_timeout": "1"},
    )
    port = service.health_port
    wait_until(
        lambda: any("ACCESS_REFUSED" in p for p in healthz(port)[1]["problems"]),
        what="ACCESS_REFUSED in /healthz",
    )
    status, body = healthz(port)
    refused = [p for p in body["problems"] if "ACCESS_REFUSED" in p]
    print(f"\nrefusing broker: /healthz {status} {body}")
    assert status == 503
    assert body["status"] == "unhealthy"
    assert len(refused) == 1
    assert "hn-no-such-user@127.0.0.1:5672" in refused[0]
    assert password not in json.dumps(body)
    assert password not in service.log
    sample = metrics(port)
    assert sample["hypervisor_notifier_broker_connected"] == 0.0


def test_the_service_fails_over_to_the_next_broker_of_its_transport_url(
    make_domain, start_service, subscribe
):
    with socket.socket() as unused:  # a port where no broker answers
        unused.bind(("127.0.0.1", 0))
        dead = unused.getsockname()[1]
    dom = make_domain()
    _, collector = subscribe()
    service = start_service(
        transport_url=f"rabbit://guest:guest@127.0.0.1:{dead},guest:guest@127.0.0.1:5672/"
    )

    collector.wait_for(lambda e: e.instance_uuid == dom.UUIDString())
    assert f"cannot publish to broker guest@127.0.0.1:{dead}" in service.log
    assert "connected to broker guest@127.0.0.1:5672" in service.log
