"""Opening a libvirt connection without trusting libvirtd to answer."""

from __future__ import annotations

import logging
import threading
import urllib.parse
from typing import Any

import libvirt

LOG = logging.getLogger(__name__)


class ConnectTimeout(Exception):
    """libvirtd did not answer the open in time (it may be hung)."""


def check_uri(uri: str) -> None:
    """Raise ValueError unless ``uri`` looks like a libvirt URI (``driver[+transport]://...``).

    Only the shape is checked; whether the daemon answers is found by connecting.
    """
    parts = urllib.parse.urlsplit(uri)
    if not parts.scheme or "://" not in uri:
        raise ValueError(f"{uri!r} is not a libvirt URI (expected e.g. qemu:///system)")


def open_connection(uri: str, *, read_only: bool, timeout: float) -> libvirt.virConnect:
    """Open ``uri`` in a helper thread and wait at most ``timeout`` seconds.

    ``libvirt.open`` blocks forever on a daemon that accepts the socket but
    never answers. On timeout the helper thread is abandoned; if its open
    completes later, it closes that connection itself.

    Raises:
        ConnectTimeout: libvirtd did not answer in time.
        libvirt.libvirtError: the open failed (no daemon, refused, bad URI).

    """
    outcome: list[libvirt.virConnect | libvirt.libvirtError] = []
    lock = threading.Lock()
    done = threading.Event()
    abandoned = False

    def attempt() -> None:
        try:
            result = libvirt.openReadOnly(uri) if read_only else libvirt.open(uri)
        except libvirt.libvirtError as exc:
            result = exc
        with lock:
            if abandoned and isinstance(result, libvirt.virConnect):
                quietly(result.close)
                return
            outcome.append(result)
            done.set()

    threading.Thread(target=attempt, name="libvirt-open", daemon=True).start()
    if not done.wait(timeout):
        with lock:
            if not done.is_set():
                abandoned = True
                raise ConnectTimeout(f"libvirtd did not answer within {timeout:g} s")
    result = outcome[0]
    if isinstance(result, libvirt.libvirtError):
        raise result
    return result


def quietly(call: Any, *args: Any) -> None:
    """Call a libvirt cleanup function; its error (a dead daemon's) is only logged at debug."""
    try:
        call(*args)
    except libvirt.libvirtError:
        LOG.debug("libvirt cleanup call %s failed", getattr(call, "__name__", call), exc_info=True)
