"""TLS options for a broker connection, reusable in any group.

The service registers them in ``[publisher]``; the nova adapter can register
them in nova.conf's ``[hypervisor_notifier]`` group, and build the settings
with ``TLSSettings.from_conf(conf.hypervisor_notifier)``.
"""

from __future__ import annotations

from oslo_config import cfg

opts = [
    cfg.StrOpt(
        "ssl_ca_file",
        help="TLS: PEM file of the CA(s) that signed the broker's certificate. "
        "Unset: the system's CA store.",
    ),
    cfg.StrOpt(
        "ssl_cert_file",
        help="TLS: PEM client certificate presented to the broker (for a broker "
        "that requires one).",
    ),
    cfg.StrOpt(
        "ssl_key_file",
        help="TLS: private key of ssl_cert_file (unset when that file holds the key).",
    ),
]
