"""``hypervisor-notifier-nova-compute``: nova-compute, listening to the bus.

Takes exactly nova-compute's arguments. nova's ``[hypervisor_notifier]
source`` (see :mod:`hypervisor_notifier.consumer.nova`) chooses where its
lifecycle events come from; with ``driver`` this is plain nova-compute.
"""

from __future__ import annotations


def main() -> None:
    """Run nova's own nova-compute main with the adapter installed."""
    # Imported first: it applies nova's concurrency mode (eventlet monkey
    # patching, when chosen) before the consumer's modules are imported.
    from nova.cmd import compute

    from hypervisor_notifier.consumer import nova as adapter

    adapter.install()
    compute.main()


if __name__ == "__main__":
    main()
