"""/healthz and /metrics of the real service when all is well."""

from __future__ import annotations

import re

from tests.service_process import http_get

from .faults import (
    metrics,
    wait_for_health,
    wait_until,
)


def test_health_ok_and_metrics_when_all_is_well(make_domain, start_service, subscribe):
    dom = make_domain()
    dom.create()
    _, collector = subscribe()
    service = start_service()
    port = service.health_port
    collector.wait_for(lambda e: e.instance_uuid == dom.UUIDString())
    dom.suspend()
    collector.wait_for(lambda e: e.instance_uuid == dom.UUIDString() and not e.resync)
    body = wait_for_health(port, 200)
    assert body == {"status": "ok", "problems": []}

    status, text = http_get(port, "/metrics")
    assert status == 200
    # CounterMetricFamily("..._events_received") is exposed with the _total suffix.
    resync = re.search(
        r'^hypervisor_notifier_events_received_total\{kind="resync"\} (\S+)$', text, re.M
    )
    pushed = re.search(
        r'^hypervisor_notifier_events_received_total\{kind="pushed"\} (\S+)$', text, re.M
    )
    assert resync and float(resync.group(1)) >= 1, text
    assert pushed and float(pushed.group(1)) >= 1, text
    assert "# TYPE hypervisor_notifier_publish_latency_seconds histogram" in text
    sample = metrics(port)
    for name in ("published", "confirmed", "resent", "nacked", "returned", "coalesced"):
        assert f"hypervisor_notifier_events_{name}_total" in sample, name
    for name in ("broker", "hypervisor"):
        assert sample[f"hypervisor_notifier_{name}_reconnects_total"] == 0
    assert sample['hypervisor_notifier_resyncs_total{reason="connected"}'] == 1
    assert sample["hypervisor_notifier_outbox_durable"] == 1.0
    assert sample["hypervisor_notifier_outbox_damaged"] == 0.0
    (build,) = [key for key in sample if key.startswith("hypervisor_notifier_build_info{")]
    assert re.fullmatch(r'hypervisor_notifier_build_info\{version="\d+\.\d+\.\d+.*"\}', build)
    assert sample[build] == 1.0
    assert sample["process_resident_memory_bytes"] > 0
    assert sample["hypervisor_notifier_broker_connected"] == 1.0
    assert sample["hypervisor_notifier_hypervisor_connected"] == 1.0

    def settled() -> bool:
        # Outbox empty, and one latency observation per confirm (the confirm
        # counter is incremented just before the observations: polled).
        sample.update(metrics(port))
        return sample["hypervisor_notifier_outbox_depth"] == 0 and (
            sample["hypervisor_notifier_publish_latency_seconds_count"]
            == sample["hypervisor_notifier_events_confirmed_total"]
        )

    wait_until(settled, what=lambda: f"outbox empty, one observation per confirm: {sample}")
    confirmed = sample["hypervisor_notifier_events_confirmed_total"]
    count = sample["hypervisor_notifier_publish_latency_seconds_count"]
    assert count == confirmed >= 2
    assert sample['hypervisor_notifier_publish_latency_seconds_bucket{le="+Inf"}'] == count
    assert sample["hypervisor_notifier_publish_latency_seconds_sum"] > 0
    print(
        f"\nhealth ok: /healthz 200 {body}; events_received_total: {resync.group(1)} resync, "
        f"{pushed.group(1)} pushed; {confirmed:.0f} confirmed, latency histogram count "
        f"{count:.0f}, sum {sample['hypervisor_notifier_publish_latency_seconds_sum']:.4f} s"
    )
