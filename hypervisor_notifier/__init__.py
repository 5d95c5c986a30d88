"""Forward hypervisor guest lifecycle events to an AMQP topic, and subscribe to them."""

from __future__ import annotations


def version() -> str:
    """The installed package's version (what ``--version`` answers)."""
    # Imported here: every process imports the package, few ask its version.
    from importlib import metadata

    try:
        return metadata.version("hypervisor-notifier")
    except metadata.PackageNotFoundError:  # a source tree that was never installed
        return "unknown"
