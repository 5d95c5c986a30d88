"""A guest failure to masakari's API accepting its notification: ours beside masakari-monitors'.

Usage: ``python benchmarks/masakari_latency.py [--events N]`` (or ``tox -e masakari-bench``;
needs libvirt-python, libvirtd's ``qemu:///system``, RabbitMQ, masakari and masakari-monitors).

A benchmark, not a test. N real qemu guests (default 30), one after the
other, each started paused (its qemu runs, the guest never executes: nothing
to boot) and then failed: its qemu process is killed (SIGKILL, by the pid
libvirt wrote), and libvirt reports STOPPED/FAILED, the failure masakari
recovers. Two paths watch the same guests in the same run, each with a
masakari API of its own (masakari 22.0.0 from PyPI: sqlite, noauth2, no
engine):

1. **hypervisor-notifier**: the real service (a subprocess) on
   ``qemu:///system``, its SQLite outbox, RabbitMQ, and the
   :class:`~hypervisor_notifier.consumer.masakari.MasakariConsumer` in this
   process.
2. **masakari-monitors' instancemonitor** (a subprocess): its libvirt
   callbacks, a thread per event, its HTTP post (``[api] auth_type = none``:
   no keystone here).

Latency = the notification's ``created_at`` in masakari's database (set by
the API while it accepts the notification) - the STOPPED event as a libvirt
client of this process saw it. masakari's stamp is the wall clock (UTC):
this process's ``time.time()`` is read at the event for that; both on this
machine's clock, so they can be subtracted.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import libvirt  # noqa: E402
from harness import Stats, machine_line, progress, versions  # noqa: E402
from keystoneauth1 import adapter, noauth, session  # noqa: E402

from hypervisor_notifier import wire  # noqa: E402
from hypervisor_notifier.consumer.masakari import MasakariClient, MasakariConsumer  # noqa: E402
from tests.broker import BROKER_URL, delete_bus, unique  # noqa: E402
from tests.e2e.guest import GUEST_URI, guest_image, guest_service, guest_xml  # noqa: E402
from tests.masakari.masakari_api import MasakariAPI  # noqa: E402
from tests.service_process import write_config  # noqa: E402

TIMEOUT = 120.0
QEMU_PIDS = Path("/run/libvirt/qemu")


class StopClock:
    """When this process saw each guest's STOPPED event: wall clock (masakari's) and detail."""

    def __init__(self, uri: str = GUEST_URI) -> None:
        from hypervisor_notifier.backends.libvirt import eventloop

        eventloop.start()
        self.conn = libvirt.open(uri)
        self._stopped: dict[str, tuple[float, int]] = {}
        self._changed = threading.Condition()
        self._callback_id = self.conn.domainEventRegisterAny(
            None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, self._on_event, None
        )

    def _on_event(self, _conn: object, dom: libvirt.virDomain, event: int, detail: int,
                  _opaque: object) -> None:  # fmt: skip
        if event == libvirt.VIR_DOMAIN_EVENT_STOPPED:
            with self._changed:
                self._stopped[dom.UUIDString()] = (time.time(), detail)
                self._changed.notify_all()

    def wait(self, instance_uuid: str) -> tuple[float, int]:
        """The STOPPED event of ``instance_uuid``: (wall clock, libvirt detail)."""
        with self._changed:
            if not self._changed.wait_for(lambda: instance_uuid in self._stopped, TIMEOUT):
                raise TimeoutError(f"no STOPPED event for {instance_uuid} in {TIMEOUT} s")
            return self._stopped[instance_uuid]

    def close(self) -> None:
        with contextlib.suppress(libvirt.libvirtError):
            self.conn.domainEventDeregisterAny(self._callback_id)
        self.conn.close()


class Accepted:
    """When each guest's notification was accepted: the sender got masakari's 2xx (wall clock).

    Arguments:
        api: The masakari API the path posts to (its database is checked too).

    """

    def __init__(self, api: MasakariAPI) -> None:
        self.api = api
        #: When the sender began to POST each guest's notification (wall clock).
        self.posted: dict[str, float] = {}
        self._at: dict[str, float] = {}
        self._changed = threading.Condition()

    def note_post(self, instance_uuid: str, at: float) -> None:
        self.posted.setdefault(instance_uuid, at)

    def note(self, instance_uuid: str, at: float) -> None:
        with self._changed:
            self._at.setdefault(instance_uuid, at)
            self._changed.notify_all()

    def poll(self) -> None:
        """Look for acceptances the path does not tell by itself (a child's log)."""

    def wait(self, instance_uuid: str) -> tuple[float, float]:
        """When ``instance_uuid``'s notification was posted and accepted (masakari stored it)."""
        deadline = time.monotonic() + TIMEOUT
        while True:
            self.poll()
            with self._changed:
                if instance_uuid in self._at:
                    at = self._at[instance_uuid]
                    break
                # A child's log offers nothing to wait on: look again shortly.
                self._changed.wait(0.05)
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.api.url}: no notification for {instance_uuid}")
        if not stored(self.api, instance_uuid):
            raise RuntimeError(f"{self.api.url} answered 2xx, stored nothing for {instance_uuid}")
        return self.posted[instance_uuid], at


def stored(api: MasakariAPI, instance_uuid: str) -> bool:
    """Whether masakari's database holds a notification for ``instance_uuid``."""
    with contextlib.closing(sqlite3.connect(api.directory / "masakari.db")) as db:
        query = "SELECT count(*) FROM notifications WHERE payload LIKE ?"
        return db.execute(query, (f"%{instance_uuid}%",)).fetchone()[0] > 0


class StampingClient(MasakariClient):
    """The consumer's client, noting when masakari accepted each notification."""

    def __init__(self, accepted: Accepted, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.accepted = accepted

    def send(self, notification: dict[str, Any]) -> str:
        instance_uuid = notification["payload"]["instance_uuid"]
        self.accepted.note_post(instance_uuid, time.time())
        outcome = super().send(notification)
        self.accepted.note(instance_uuid, time.time())
        return outcome


class MonitorLog(Accepted):
    """instancemonitor's acceptances, from its log: ``Response: ...`` once masakari answered 2xx.

    Arguments:
        api: See :class:`Accepted`.
        log: Its log file (oslo.log's local-time stamps, milliseconds).

    """

    def __init__(self, api: MasakariAPI, log: Path) -> None:
        super().__init__(api)
        self.log = log

    def poll(self) -> None:
        for line in self.log.read_text(errors="replace").splitlines():
            if "'instance_uuid': '" not in line:
                continue
            instance_uuid = line.split("'instance_uuid': '", 1)[1][:36]
            # Naive: local time, as logged.
            at = datetime.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S.%f").timestamp()
            if "masakari [-] Send a notification." in line:
                self.note_post(instance_uuid, at)
            elif "masakari [-] Response:" in line:
                self.note(instance_uuid, at)


def fail_guest(conn: libvirt.virConnect, image: Path) -> str:
    """Start a nova guest paused, kill its qemu (STOPPED/FAILED follows); return its UUID."""
    instance_uuid = str(uuid.uuid4())
    name = f"hn-mbench-{instance_uuid[:8]}"
    dom = conn.defineXML(guest_xml(name, instance_uuid, image, poweroff_after=3600))
    try:
        dom.createWithFlags(libvirt.VIR_DOMAIN_START_PAUSED)
        os.kill(int((QEMU_PIDS / f"{name}.pid").read_text()), signal.SIGKILL)
    except BaseException:
        with contextlib.suppress(libvirt.libvirtError):
            dom.destroy()
        dom.undefine()
        raise
    return instance_uuid


@contextlib.contextmanager
def masakari_api(workdir: Path, host: str) -> Iterator[MasakariAPI]:
    """masakari's API with ``host`` in a failover segment; stopped after."""
    directory = workdir / host
    directory.mkdir()
    api = MasakariAPI(directory)
    api.register_host(host)
    api.start()
    try:
        yield api
    finally:
        api.stop()


@contextlib.contextmanager
def our_path(workdir: Path) -> Iterator[Accepted]:
    """The real service on the guests' libvirtd, RabbitMQ, the masakari consumer here."""
    host, exchange, topic = unique("mbench-host"), unique("hn-mbench"), unique("hn_mbench")
    queue = unique("hn_mbench.masakari")
    with contextlib.ExitStack() as stack:
        stack.callback(delete_bus, exchange, [queue, wire.host_queue_name(topic, host)])
        accepted = Accepted(stack.enter_context(masakari_api(workdir, host)))
        auth = noauth.NoAuth(endpoint=accepted.api.url)
        masakari = adapter.Adapter(session.Session(auth=auth), service_type="instance-ha")
        client = StampingClient(accepted, masakari)
        consumer = MasakariConsumer(client, BROKER_URL, queue, exchange=exchange, topic=topic)
        consumer.start()
        stack.callback(consumer.stop)
        if not consumer.wait_ready(TIMEOUT):
            raise TimeoutError("the masakari consumer did not consume")
        stack.enter_context(guest_service(workdir, host, exchange, topic))
        yield accepted


@contextlib.contextmanager
def monitor_path(workdir: Path, conn: libvirt.virConnect) -> Iterator[Accepted | None]:
    """masakari-monitors' instancemonitor on the guests' libvirtd; None if it cannot run here."""
    try:
        import masakarimonitors  # noqa: F401 - only whether it is installed
    except ImportError:
        progress("masakari-monitors is not installed: its path is not measured")
        yield None
        return
    host = unique("mbench-monitor")
    with masakari_api(workdir, host) as api:
        config = workdir / "masakarimonitors.conf"
        write_config(config, {
            # debug: it logs each libvirt event it receives, which tells when it listens.
            "DEFAULT": {"hostname": host, "debug": "true"},
            "libvirt": {"connection_uri": GUEST_URI},
            # No keystone: keystoneauth1's "none" plugin straight to the local API.
            "api": {"auth_type": "none", "endpoint": api.url},
        })  # fmt: skip
        log = workdir / "instancemonitor.log"
        with log.open("w") as output:
            monitor = subprocess.Popen(
                [str(Path(sys.executable).parent / "masakari-instancemonitor"),
                 "--config-file", str(config)],
                stdout=output, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        try:
            wait_listening(conn, log)
            yield MonitorLog(api, log)
        finally:
            monitor.send_signal(signal.SIGTERM)
            try:
                monitor.wait(30)
            except subprocess.TimeoutExpired:
                monitor.kill()
                monitor.wait()


def wait_listening(conn: libvirt.virConnect, log: Path) -> None:
    """Until instancemonitor logs the definition of a domain: its callbacks are registered."""
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        instance_uuid = str(uuid.uuid4())
        name = f"hn-mbench-probe-{instance_uuid[:8]}"
        xml = (f"<domain type='qemu'><name>{name}</name><uuid>{instance_uuid}</uuid>"
               "<memory>65536</memory><os><type>hvm</type></os></domain>")  # fmt: skip
        conn.defineXML(xml).undefine()
        for _ in range(20):
            if instance_uuid in log.read_text(errors="replace"):
                return
            time.sleep(0.25)  # its log is all it says
    raise TimeoutError(f"instancemonitor did not listen within {TIMEOUT} s: see {log}")


def run(
    clock: StopClock, count: int, image: Path, ours: Accepted, theirs: Accepted | None
) -> tuple[list[list[float]], list[list[float]]]:
    """Fail ``count`` guests one at a time; each path's latencies (ms): [accepted, POST begun]."""
    ours_ms: list[list[float]] = [[], []]
    theirs_ms: list[list[float]] = [[], []]
    for number in range(count):
        instance_uuid = fail_guest(clock.conn, image)
        try:
            stopped_at, detail = clock.wait(instance_uuid)
            if detail != libvirt.VIR_DOMAIN_EVENT_STOPPED_FAILED:
                raise RuntimeError(f"{instance_uuid}: STOPPED detail {detail}, not FAILED")
            for path, latencies in ((ours, ours_ms), (theirs, theirs_ms)):
                if path is not None:
                    posted, accepted = path.wait(instance_uuid)
                    latencies[0].append((accepted - stopped_at) * 1000)
                    latencies[1].append((posted - stopped_at) * 1000)
        finally:
            with contextlib.suppress(libvirt.libvirtError):
                clock.conn.lookupByUUIDString(instance_uuid).undefine()
        theirs_text = f", instancemonitor {theirs_ms[0][-1]:.0f} ms" if theirs_ms[0] else ""
        progress(f"guest {number + 1}/{count}: ours {ours_ms[0][-1]:.0f} ms{theirs_text}")
    return ours_ms, theirs_ms


def monitor_retry_schedule() -> tuple[int, int]:
    """instancemonitor's ``[callback] retry_max`` and ``retry_interval`` (its own defaults)."""
    try:
        from masakarimonitors.conf import instance
    except ImportError:
        return 12, 10  # as its documentation lists them
    defaults = {opt.name: opt.default for opt in instance.monitor_callback_opts}
    return defaults["retry_max"], defaults["retry_interval"]


def report(count: int, ours: list[list[float]], theirs: list[list[float]]) -> None:
    print(f"\nguest failure (qemu killed: STOPPED/FAILED) -> masakari's API accepted the "
          f"notification, {count} qemu guests (ms)")  # fmt: skip
    print(f"  {'path':<44}{'p50':>8}{'p90':>8}{'p99':>8}{'max':>8}{'min':>8}")
    print(Stats.of(ours[0]).row("hypervisor-notifier -> RabbitMQ -> consumer"))
    print(Stats.of(ours[1]).row("  until the consumer began its POST"))
    if theirs[0]:
        print(Stats.of(theirs[0]).row("masakari-monitors instancemonitor"))
        print(Stats.of(theirs[1]).row("  until it began its POST"))
    else:
        print(f"  {'masakari-monitors instancemonitor':<44}  not run here")
    retry_max, retry_interval = monitor_retry_schedule()
    print(f"\nwith masakari's API down: instancemonitor retries {retry_max} times, "
          f"{retry_interval} s apart, then drops the notification ({retry_max * retry_interval} s "
          "after the first failed post, its [callback] defaults); hypervisor-notifier retries "
          "with backoff from 0.5 s doubling up to [masakari] retry_interval_max (60 s) for as "
          "long as it takes, the event unacknowledged on its durable queue.")  # fmt: skip
    print(machine_line())
    print(versions("masakari", "masakari-monitors", "libvirt-python", "kombu"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--events", type=int, default=30, help="guests failed, one at a time")
    args = parser.parse_args()
    image = guest_image()
    with contextlib.ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="hn-mbench-")))
        clock = StopClock()
        stack.callback(clock.close)
        ours = stack.enter_context(our_path(workdir))
        theirs = stack.enter_context(monitor_path(workdir, clock.conn))
        progress("warm-up: one guest failed, not counted (both paths answer)")
        run(clock, 1, image, ours, theirs)
        progress(f"failing {args.events} guests one at a time")
        results = run(clock, args.events, image, ours, theirs)
    report(args.events, *results)


if __name__ == "__main__":
    main()
