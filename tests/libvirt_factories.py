"""Builders for the tests of the libvirt backend (they need the libvirt binding)."""

from __future__ import annotations

import libvirt


def libvirt_error(code: int) -> libvirt.libvirtError:
    """A libvirtError whose get_error_code() is ``code`` (the binding reads it from ``err``)."""
    exc = libvirt.libvirtError(f"error {code}")
    exc.err = (code, libvirt.VIR_FROM_NONE, f"error {code}", libvirt.VIR_ERR_ERROR,
               None, None, None, -1, -1)  # fmt: skip
    return exc
