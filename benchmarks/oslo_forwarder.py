"""A minimal libvirt -> oslo.messaging forwarder: the baseline of ``latency.py``.

What an oslo.messaging user would write: libvirt's default event loop in a
thread, a lifecycle callback that only queues the event (libvirt callbacks
must not block), and the main thread taking events off that queue and
calling ``Notifier.info`` (driver ``messagingv2``) for each, in order.

Usage: ``python oslo_forwarder.py --exchange EXCHANGE --topic TOPIC
[--uri URI] [--transport-url URL]``. Prints ``ready`` on stdout once the
callback is registered; on SIGTERM, sends what was queued and exits 0.
"""

from __future__ import annotations

import argparse
import queue
import signal
import socket
import sys
import threading

import libvirt
import oslo_messaging
from oslo_config import cfg

#: libvirt lifecycle event -> nova's transition name (only those the benchmark causes).
TRANSITIONS = {
    libvirt.VIR_DOMAIN_EVENT_STARTED: "started",
    libvirt.VIR_DOMAIN_EVENT_SUSPENDED: "paused",
    libvirt.VIR_DOMAIN_EVENT_RESUMED: "resumed",
    libvirt.VIR_DOMAIN_EVENT_STOPPED: "stopped",
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--uri", default="test+unix:///default", help="libvirt URI to watch")
    parser.add_argument("--transport-url", default="rabbit://guest:guest@127.0.0.1:5672/")
    parser.add_argument("--exchange", required=True, help="[DEFAULT] control_exchange")
    parser.add_argument("--topic", required=True, help="notification topic")
    return parser.parse_args(argv)


def start_event_loop() -> None:
    """Register libvirt's default event loop (before any open) and run it in a thread."""
    libvirt.virEventRegisterDefaultImpl()
    threading.Thread(target=run_event_loop, name="libvirt-event-loop", daemon=True).start()


def run_event_loop() -> None:
    while True:
        libvirt.virEventRunDefaultImpl()


def on_lifecycle(
    _conn: libvirt.virConnect,
    dom: libvirt.virDomain,
    event: int,
    detail: int,
    pending: queue.SimpleQueue,
) -> None:
    """libvirt callback: hand off only (UUIDString and name need no RPC)."""
    pending.put((dom.UUIDString(), dom.name(), event, detail))


def forward(pending: queue.SimpleQueue, notifier: oslo_messaging.Notifier) -> None:
    """Send each queued event as an INFO notification, until None is queued."""
    while (item := pending.get()) is not None:
        instance_uuid, name, event, detail = item
        transition = TRANSITIONS.get(event, f"event_{event}")
        payload = {
            "instance_uuid": instance_uuid,
            "instance_name": name,
            "transition": transition,
            "event": event,
            "detail": detail,
        }
        notifier.info({}, f"bench.instance.{transition}", payload)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    oslo_messaging.set_transport_defaults(control_exchange=args.exchange)
    transport = oslo_messaging.get_notification_transport(cfg.CONF, url=args.transport_url)
    notifier = oslo_messaging.Notifier(
        transport,
        publisher_id=f"oslo-forwarder.{socket.gethostname()}",
        driver="messagingv2",
        topics=[args.topic],
    )
    pending: queue.SimpleQueue = queue.SimpleQueue()
    # SimpleQueue.put is reentrant: safe from a signal handler.
    signal.signal(signal.SIGTERM, lambda _signum, _frame: pending.put(None))
    start_event_loop()
    conn = libvirt.openReadOnly(args.uri)
    callback_id = conn.domainEventRegisterAny(
        None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, on_lifecycle, pending
    )
    print("ready", flush=True)
    try:
        forward(pending, notifier)
    finally:
        conn.domainEventDeregisterAny(callback_id)
        conn.close()
        transport.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
