"""Options of the ``[signing]`` group: the key events are signed and verified with.

Reusable in another project's configuration: the nova adapter registers
:data:`opts` in nova.conf's ``[hypervisor_notifier]`` group and builds its
verifier with ``Verifier.from_conf(conf.hypervisor_notifier)``.
"""

from __future__ import annotations

from oslo_config import cfg

GROUP = "signing"

# The signing module's own values (a test checks they agree): conf imports nothing.
MIN_KEY_BYTES = 32
DEFAULT_MAX_AGE = 3600.0
DEFAULT_MAX_CLOCK_SKEW = 60.0

opts = [
    cfg.StrOpt(
        "key",
        secret=True,
        help="Shared secret events are signed with (HMAC-SHA256), at least "
        f"{MIN_KEY_BYTES} bytes (e.g. the output of 'openssl rand -hex 32'). "
        "The notifier signs every event with it; a consumer that has it refuses "
        "events not signed with it (or with previous_key), replayed or too old. "
        "Unset: events are not signed, and consumers accept unsigned events. "
        "Set but empty or short: the service (or consumer) refuses to start.",
    ),
    cfg.StrOpt(
        "key_file",
        help="File holding the key (instead of key), surrounding whitespace stripped. "
        "It must be its owner's only (mode 0600 or 0400, as ssh requires of a "
        "private key): one that group or others may access is refused, and so is "
        "an empty or short one.",
    ),
    cfg.StrOpt(
        "key_id",
        default="1",
        help="Name of the key, carried in each signature so that consumers know "
        "which key to check it with. Give each new key a new id.",
    ),
    cfg.StrOpt(
        "previous_key",
        secret=True,
        help="Consumers only: the key before the current one, still accepted while "
        "notifiers switch to the new key (and while events signed with it wait "
        "in outboxes and queues).",
    ),
    cfg.StrOpt(
        "previous_key_file",
        help="File holding previous_key (instead of previous_key), under the same "
        "rules as key_file.",
    ),
    cfg.StrOpt(
        "previous_key_id",
        default="0",
        help="Name of previous_key: the key_id it was used with.",
    ),
    cfg.FloatOpt(
        "max_age",
        default=DEFAULT_MAX_AGE,
        min=1,
        help="Consumers only: seconds after it occurred that an event is refused as a "
        "possible replay. It must cover the time an event may wait to be delivered "
        "(a broker outage, a stopped consumer); a consumer remembers the event_ids "
        "it delivered for as long, and refuses them if they come again.",
    ),
    cfg.FloatOpt(
        "max_clock_skew",
        default=DEFAULT_MAX_CLOCK_SKEW,
        min=0,
        help="Consumers only: seconds an event's occurred_at may lie in the future "
        "(clocks of notifier and consumer hosts differ a little).",
    ),
]
