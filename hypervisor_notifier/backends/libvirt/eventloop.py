"""libvirt's default event loop, registered once per process, run in its own thread.

libvirt delivers domain events only to connections opened after an event
implementation was registered, so :func:`start` must run before the first
``libvirt.open*`` of the process. The loop cannot be unregistered; its
thread is a daemon that lives as long as the process.
"""

from __future__ import annotations

import logging
import threading

import libvirt

LOG = logging.getLogger(__name__)

_lock = threading.Lock()
_thread: threading.Thread | None = None


def start() -> None:
    """Register the default event implementation and start its thread (idempotent)."""
    global _thread
    with _lock:
        if _thread is not None:
            return
        libvirt.virEventRegisterDefaultImpl()
        # libvirt prints every error to stderr by default; we log them ourselves.
        libvirt.registerErrorHandler(_ignore_error, None)
        _thread = threading.Thread(target=_run, name="libvirt-event-loop", daemon=True)
        _thread.start()


def _ignore_error(_context: object, _error: object) -> None:
    """Swallow libvirt's default error printing (errors raise libvirtError anyway)."""


def _run() -> None:
    while True:
        try:
            libvirt.virEventRunDefaultImpl()
        except libvirt.libvirtError:
            LOG.exception("libvirt event loop iteration failed")
