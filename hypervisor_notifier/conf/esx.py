"""Options of the ``[esx]`` group (the ``esx`` backend)."""

from __future__ import annotations

from oslo_config import cfg

GROUP = "esx"

opts = [
    cfg.HostAddressOpt(
        "host",
        default="127.0.0.1",
        help="ESXi host or vCenter to watch (its vSphere API, /sdk).",
    ),
    cfg.PortOpt("port", default=443, help="HTTPS port of the vSphere API."),
    cfg.StrOpt("username", default="root", help="User to log in as (read-only is enough)."),
    cfg.StrOpt("password", default="", secret=True, help="Password of that user."),
    cfg.BoolOpt(
        "insecure",
        default=False,
        help="Skip the verification of the server's certificate. Only for tests: "
        "prefer ca_file for a self-signed certificate.",
    ),
    cfg.StrOpt(
        "ca_file",
        help="CA bundle (PEM) that signed the server's certificate. Unset: the system's CA store.",
    ),
    cfg.StrOpt(
        "cluster",
        help="Report only the VMs of this cluster (its name). Unset, with "
        "esx_host unset: every VM the user can see.",
    ),
    cfg.StrOpt(
        "esx_host",
        help="Report only the VMs of this host system (its name in vCenter).",
    ),
    cfg.FloatOpt(
        "connect_timeout",
        default=10.0,
        min=0.1,
        help="Seconds allowed for the login and for each API call.",
    ),
    cfg.FloatOpt(
        "reconnect_interval_max",
        default=30.0,
        min=0.1,
        help="Largest delay, in seconds, between login attempts (starts at 0.5 s, doubles).",
    ),
    cfg.IntOpt(
        "wait_seconds",
        default=1,
        min=1,
        help="Longest a WaitForUpdatesEx call waits for a change before the backend "
        "checks for a stop or a resync request.",
    ),
]
