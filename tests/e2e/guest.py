"""A real guest that shuts itself down or fails, and a clock for its libvirt events.

Shared by the end-to-end tests and ``benchmarks/nova_detection.py``.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import libvirt

from hypervisor_notifier import wire
from hypervisor_notifier.backends.libvirt import eventloop
from hypervisor_notifier.consumer import Subscriber
from hypervisor_notifier.consumer.nova import NovaEventSource
from tests.bus import BROKER_URL, delete_bus, unique
from tests.collector import Collector
from tests.service_process import TIMEOUT, ServiceProcess, write_config

REPO = Path(__file__).resolve().parents[2]
GUEST_URI = os.environ.get("HN_GUEST_URI", "qemu:///system")
NOVA_NAMESPACE = "http://openstack.org/xmlns/libvirt/nova/1.1"


def guest_image() -> Path:
    """The directory with the guest's vmlinuz and initrd.img (built once per machine)."""
    result = subprocess.run(
        [str(REPO / "tools" / "guest-image.sh")], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"tools/guest-image.sh failed:\n{result.stderr}")
    return Path(result.stdout.strip())


def guest_xml(name: str, instance_uuid: str, image: Path, poweroff_after: float, *,
              mode: str = "poweroff", cmdline: str = "", devices: str = "",
              on_crash: str = "destroy") -> str:  # fmt: skip
    """A TCG guest launched "by nova" whose /init does ``mode`` (tools/guest-image.sh).

    The default powers it off ``poweroff_after`` s after boot; ``cmdline`` and
    ``devices`` add to its kernel command line and devices.
    """
    return f"""<domain type='qemu'>
  <name>{name}</name><uuid>{instance_uuid}</uuid>
  <metadata><nova:instance xmlns:nova='{NOVA_NAMESPACE}'>
    <nova:name>e2e-server</nova:name></nova:instance></metadata>
  <memory unit='MiB'>128</memory><vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type>
    <kernel>{image}/vmlinuz</kernel><initrd>{image}/initrd.img</initrd>
    <cmdline>console=ttyS0 quiet panic=-1 hn_poweroff_after={poweroff_after} hn_mode={mode}
      {cmdline}</cmdline></os>
  <features><acpi/></features><on_poweroff>destroy</on_poweroff>
  <on_crash>{on_crash}</on_crash>
  <devices><serial type='pty'/><memballoon model='none'/>
    <!-- no USB controller: probing it costs a TCG guest seconds of boot -->
    <controller type='usb' model='none'/>{devices}</devices>
</domain>"""


class LifecycleClock:
    """When this process saw each guest's libvirt lifecycle events (its own connection).

    Arguments:
        uri: The libvirt URI of the guests.

    """

    def __init__(self, uri: str = GUEST_URI) -> None:
        eventloop.start()
        self.conn = libvirt.open(uri)
        self._seen: dict[str, list[tuple[int, int, float]]] = {}
        self._changed = threading.Condition()
        self._callback_id = self.conn.domainEventRegisterAny(
            None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, self._on_event, None
        )

    def _on_event(self, _conn: object, dom: libvirt.virDomain, event: int, detail: int,
                  _opaque: object) -> None:  # fmt: skip
        with self._changed:
            self._seen.setdefault(dom.UUIDString(), []).append((event, detail, time.monotonic()))
            self._changed.notify_all()

    def wait_for(self, instance_uuid: str, event: int, timeout: float) -> float:
        """The monotonic time ``instance_uuid`` had ``event`` (waiting for it)."""
        with self._changed:
            found = self._changed.wait_for(
                lambda: [t for e, _, t in self._seen.get(instance_uuid, []) if e == event],
                timeout,
            )
        if not found:
            raise TimeoutError(f"no libvirt event {event} for {instance_uuid} in {timeout} s")
        return found[0]

    def events(self, instance_uuid: str) -> list[tuple[int, int]]:
        """The (event, detail) pairs seen for ``instance_uuid`` so far."""
        with self._changed:
            return [(e, d) for e, d, _ in self._seen.get(instance_uuid, [])]

    @contextlib.contextmanager
    def guest(
        self, image: Path, poweroff_after: float = 1.0, **xml: str
    ) -> Iterator[libvirt.virDomain]:
        """Define and start a guest (``xml``: see :func:`guest_xml`); destroy, undefine after."""
        instance_uuid = str(uuid.uuid4())
        dom = self.conn.defineXML(
            guest_xml(f"hn-e2e-{instance_uuid[:8]}", instance_uuid, image, poweroff_after, **xml)
        )
        try:
            dom.create()
            yield dom
        finally:
            with contextlib.suppress(libvirt.libvirtError):
                if dom.isActive():
                    dom.destroy()
            dom.undefine()

    def close(self) -> None:
        with contextlib.suppress(libvirt.libvirtError):
            self.conn.domainEventDeregisterAny(self._callback_id)
        self.conn.close()


@contextlib.contextmanager
def guest_service(workdir: Path, host: str, exchange: str, topic: str) -> Iterator[ServiceProcess]:
    """``host``'s real ``hypervisor-notifier`` on the guests' libvirtd, resynced; stopped after.

    Arguments:
        workdir: Its config file and outbox.
        host: Its ``[DEFAULT] host``.
        exchange: Its ``[publisher] exchange``.
        topic: Its ``[publisher] topic``.

    """
    config = workdir / "notifier.conf"
    write_config(config, {
        "DEFAULT": {"host": host},
        "libvirt": {"connection_uri": GUEST_URI},
        "publisher": {"transport_url": BROKER_URL, "exchange": exchange, "topic": topic},
        "outbox": {"path": str(workdir / "outbox.sqlite")},
        "health": {"port": "0"},
    })  # fmt: skip
    service = ServiceProcess(config)
    try:
        service.wait_for_log("resync (")
        yield service
    finally:
        service.stop()


@contextlib.contextmanager
def notifier() -> Iterator[tuple[str, str, str]]:
    """A host's real ``hypervisor-notifier`` on the guests' libvirtd, once it resynced.

    Yields its (host, exchange, topic); stops it and deletes the host's queue
    and exchange after.
    """
    host, exchange, topic = unique("e2e-host"), unique("hn-e2e"), unique("hn_e2e")
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(delete_bus, exchange, [wire.host_queue_name(topic, host)])
        workdir = Path(cleanup.enter_context(tempfile.TemporaryDirectory()))
        cleanup.enter_context(guest_service(workdir, host, exchange, topic))
        yield host, exchange, topic


@contextlib.contextmanager
def notifier_and_adapter(callback: Callable[[Any], None]) -> Iterator[NovaEventSource]:
    """The :func:`notifier` and the nova adapter; yields the adapter once it consumes.

    Arguments:
        callback: The adapter's callback (stands for nova's ``handle_events``).

    """
    with notifier() as (host, exchange, topic):
        source = NovaEventSource(
            callback, host=host, transport_url=BROKER_URL, exchange=exchange, topic=topic
        )
        with consuming(source):
            yield source


@contextlib.contextmanager
def notifier_and_subscriber() -> Iterator[Collector]:
    """The :func:`notifier` and a :class:`~hypervisor_notifier.consumer.Subscriber` of its host.

    Yields what the subscriber receives, lifecycle and fault events alike,
    once it consumes.
    """
    received = Collector()
    with notifier() as (host, exchange, topic):
        subscriber = Subscriber(BROKER_URL, received, on_fault=received, host=host,
                                exchange=exchange, topic=topic)  # fmt: skip
        with consuming(subscriber):
            yield received


@contextlib.contextmanager
def consuming(consumer: NovaEventSource | Subscriber) -> Iterator[None]:
    """Start ``consumer`` and wait until it consumes; stop it after."""
    consumer.start()
    try:
        if not consumer.wait_ready(TIMEOUT):
            raise TimeoutError(f"{type(consumer).__name__} did not consume within {TIMEOUT} s")
        yield
    finally:
        consumer.stop()


@contextlib.contextmanager
def small_tmpfs(size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` (``1m``) on a new directory (root only); unmounted, removed after."""
    with tempfile.TemporaryDirectory(prefix="hn-e2e-tmpfs-") as directory:
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "hn-e2e",
                        directory], check=True, capture_output=True)  # fmt: skip
        try:
            yield Path(directory)
        finally:
            subprocess.run(["umount", directory], check=True, capture_output=True)
