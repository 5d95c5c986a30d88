"""``/healthz`` and ``/metrics`` (Prometheus) on a local HTTP port.

Metrics are read from the service's own counters when scraped, except the
publish latency histogram, which the publisher feeds at each confirm, and
prometheus_client's ``process_*`` series. Counter names get their ``_total``
suffix from prometheus_client.
``/healthz`` answers 200 ``{"status": "ok", "problems": []}`` when events
flow, and 503 with one sentence per problem otherwise: it is meant for
alerts (a restart cures none of these problems).
"""

from __future__ import annotations

import functools
import http.server
import json
import logging
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pbr.version
from prometheus_client import CollectorRegistry, Histogram, ProcessCollector, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
    Metric,
)

from hypervisor_notifier.host_events import HostChange

if TYPE_CHECKING:
    from hypervisor_notifier.notifier.service import Service

LOG = logging.getLogger(__name__)


@functools.cache
def version() -> str:
    """The running release (pbr's version of the package), or ``unknown``."""
    try:
        return pbr.version.VersionInfo("hypervisor-notifier").version_string()
    except Exception:  # pbr raises a bare Exception without metadata or git: not fatal here
        return "unknown"


PREFIX = "hypervisor_notifier_"
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.05, 0.25, 1, 5, 30, 120, 600)


class ServiceCollector:
    """A Prometheus collector that reads the service's state at scrape time.

    Arguments:
        service: The running service.

    """

    def __init__(self, service: Service) -> None:
        self.service = service

    def collect(self) -> Iterator[Metric]:
        """Yield every metric's current value."""
        service, publisher, outbox = self.service, self.service.publisher, self.service.outbox
        received = CounterMetricFamily(
            PREFIX + "events_received", "Events from the hypervisor", labels=["kind"]
        )
        for kind, count in service.received.items():
            received.add_metric([kind], count)
        yield received
        resyncs = CounterMetricFamily(
            PREFIX + "resyncs", "Resyncs with the hypervisor", labels=["reason"]
        )
        for reason, count in sorted(service.resyncs.items()):
            resyncs.add_metric([reason], count)
        yield resyncs
        host = service.host_connection
        host_events = CounterMetricFamily(
            PREFIX + "host_events",
            "Host events published: hypervisor connection lost (disconnected) or back",
            labels=["change"],
        )
        for change in HostChange:
            host_events.add_metric([change.value], host.published[change.value])
        yield host_events
        counters = {
            "events_published": ("Messages sent, resends included", publisher.published),
            "events_confirmed": ("Events the broker confirmed", publisher.confirmed),
            "events_resent": (
                "Events sent again after a nack, a return or a lost connection",
                publisher.resent,
            ),
            "events_nacked": (
                "Messages the broker refused (basic.nack)",
                publisher.refusals.nacked,
            ),
            "events_returned": (
                "Messages the broker returned as unroutable (basic.return)",
                publisher.refusals.returned,
            ),
            "events_coalesced": ("Older events dropped by a full outbox", outbox.coalesced),
            "broker_reconnects": (
                "Connections to the broker after the first",
                publisher.reconnects,
            ),
            "hypervisor_reconnects": (
                "Connections to the hypervisor after the first",
                service.backend.reconnects,
            ),
        }
        for name, (text, value) in counters.items():
            yield CounterMetricFamily(PREFIX + name, text, value=value)
        gauges = {
            "outbox_depth": ("Events waiting for the broker's confirm", len(outbox)),
            "outbox_oldest_age_seconds": ("Age of the oldest waiting event", outbox.oldest_age()),
            "outbox_durable": ("1 if the outbox survives a crash", outbox.problem is None),
            "outbox_damaged": ("1 if the outbox file was found damaged at start", outbox.damaged),
            "broker_connected": ("1 if publishing to the broker", publisher.problem is None),
            "hypervisor_connected": (
                "1 if watching the hypervisor",
                service.backend.problem is None,
            ),
            "hypervisor_disconnected_seconds": (
                "Seconds since hypervisor.host.disconnected was published; 0 while connected",
                host.down_seconds(),
            ),
        }
        for name, (text, value) in gauges.items():
            yield GaugeMetricFamily(PREFIX + name, text, value=float(value))
        release = {"version": version()}
        yield InfoMetricFamily(PREFIX + "build", "The running release", value=release)


def problems(service: Service, max_event_age: float) -> list[str]:
    """What keeps events from flowing, or from being kept safe; empty when all is well."""
    found = [
        problem
        for problem in (
            service.backend.problem,
            service.publisher.problem,
            service.publisher.refusals.problem(),
            service.outbox.problem,
        )
        if problem
    ]
    age = service.outbox.oldest_age()
    if age > max_event_age:
        found.append(f"an event has waited {age:.0f} s for the broker's confirm")
    return found


class HealthServer:
    """Serve ``/healthz`` and ``/metrics`` from a thread.

    Arguments:
        service: The service to report on.
        listen: Address to bind (keep it local: no authentication).
        port: Port to bind; 0 for a free one (see :attr:`port`).
        max_event_age: Seconds an event may wait for its confirm before it is a problem.

    """

    def __init__(self, service: Service, listen: str, port: int, max_event_age: float) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(ServiceCollector(service))  # type: ignore[arg-type]
        ProcessCollector(registry=self.registry)
        latency = Histogram(
            PREFIX + "publish_latency_seconds",
            "Seconds from an event entering the outbox to the broker's confirm",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        service.publisher.observe_latency = latency.observe
        self.server = http.server.ThreadingHTTPServer(
            (listen, port), self._handler(service, max_event_age)
        )
        self.server.daemon_threads = True

    @property
    def port(self) -> int:
        """The bound port."""
        return int(self.server.server_address[1])

    def start(self) -> None:
        """Serve in a daemon thread."""
        threading.Thread(target=self.server.serve_forever, name="health", daemon=True).start()
        host = self.server.server_address[0]
        LOG.info("health and metrics on http://%s:%d/healthz and /metrics", host, self.port)

    def stop(self) -> None:
        """Stop serving and release the port."""
        self.server.shutdown()
        self.server.server_close()

    def _handler(
        self, service: Service, max_event_age: float
    ) -> type[http.server.BaseHTTPRequestHandler]:
        registry = self.registry

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/metrics":
                    self._send(200, "text/plain; version=0.0.4", generate_latest(registry))
                elif self.path == "/healthz":
                    found = problems(service, max_event_age)
                    body = {"status": "unhealthy" if found else "ok", "problems": found}
                    self._send(
                        503 if found else 200, "application/json", json.dumps(body).encode()
                    )
                else:
                    self._send(404, "text/plain", b"try /healthz or /metrics\n")

            def _send(self, status: int, content_type: str, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                LOG.debug("health endpoint: " + format, *args)

        return Handler
