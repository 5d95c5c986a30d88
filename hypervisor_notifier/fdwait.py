"""Waiting for descriptors to become readable, whatever their number.

``select.select`` refuses a descriptor numbered 1024 or above
(``FD_SETSIZE``), and a process holding many connections (a tool consuming
many queues, a fleet of simulated hosts) has such descriptors: its
publishers and subscribers would fail on every turn. ``select.poll`` has no
such limit. eventlet's green ``select`` (nova-compute is monkey-patched) has
no ``poll``: there, ``select.select`` it is, cooperatively.
"""

from __future__ import annotations

import select
from typing import Any


def readable(waitables: list[Any], timeout: float) -> set[int]:
    """The descriptors of ``waitables`` readable within ``timeout`` seconds (0: now).

    Arguments:
        waitables: Descriptors (int) or objects with ``fileno()`` (sockets).
        timeout: Seconds to wait at most.

    """
    fds = [item if isinstance(item, int) else item.fileno() for item in waitables]
    if not hasattr(select, "poll"):
        return set(select.select(fds, [], [], timeout)[0])
    poller = select.poll()
    for fd in fds:
        poller.register(fd, select.POLLIN)
    return {fd for fd, _ in poller.poll(timeout * 1000)}
