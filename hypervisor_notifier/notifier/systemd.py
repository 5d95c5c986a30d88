"""systemd's service notifications (``Type=notify``, ``WatchdogSec``), without a binding.

systemd passes ``$NOTIFY_SOCKET`` (a unix datagram socket; a leading ``@``
names one in the abstract namespace) and, with ``WatchdogSec``,
``$WATCHDOG_USEC`` (and ``$WATCHDOG_PID``). The protocol is one datagram of
``NAME=value`` lines: ``READY=1`` once started, ``STOPPING=1`` when stopping,
``WATCHDOG=1`` at least every ``WATCHDOG_USEC``, or systemd kills and
restarts the service. Outside systemd every call does nothing.
"""

from __future__ import annotations

import logging
import os
import socket

LOG = logging.getLogger(__name__)


def notify(state: str) -> bool:
    """Send ``state`` (e.g. ``READY=1``) to ``$NOTIFY_SOCKET``; False when not under systemd.

    A send that fails is logged, not raised: a notification is never worth
    stopping the service for (systemd then restarts it if it was the watchdog).
    """
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):  # the abstract namespace: a leading NUL byte
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(state.encode(), address)
    except OSError as exc:
        LOG.warning("systemd notification %s to %s failed: %s", state, address, exc)
        return False
    return True


def watchdog_interval() -> float | None:
    """Seconds between ``WATCHDOG=1`` pings (half of ``$WATCHDOG_USEC``), or None without one.

    As ``sd_watchdog_enabled``: ignored when ``$WATCHDOG_PID`` names another process.
    """
    usec = os.environ.get("WATCHDOG_USEC", "")
    pid = os.environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if pid and pid != str(os.getpid()):
        return None
    return int(usec) / 1e6 / 2
