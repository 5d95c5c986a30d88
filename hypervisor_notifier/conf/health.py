"""Options of the ``[health]`` group."""

from __future__ import annotations

from oslo_config import cfg

GROUP = "health"

opts = [
    cfg.HostAddressOpt(
        "listen",
        default="127.0.0.1",
        help="Address of the HTTP endpoint serving /healthz and /metrics (Prometheus).",
    ),
    cfg.PortOpt(
        "port",
        default=9324,
        help="Port of the HTTP endpoint; 0 picks a free port (logged at start).",
    ),
    cfg.BoolOpt("enabled", default=True, help="Serve /healthz and /metrics."),
    cfg.FloatOpt(
        "max_event_age",
        default=60.0,
        min=0,
        help="/healthz reports a problem when an event has waited longer than this "
        "many seconds for the broker's confirm.",
    ),
]
