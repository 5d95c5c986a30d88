"""An outbox path that cannot be created, a disk that fills up: publishing goes on and says so.

The disk-full tests mount a tmpfs (root needed). Each test prints its counts.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from hypervisor_notifier.events import PowerState, Transition
from tests.service_process import healthz

from .faults import (
    Burst,
    metrics,
    precondition,
    real_power_state,
    resync_lines,
    running_domains,
    sentinel_received,
    wait_for_health,
)

OUTBOX_PROBLEM = "is not usable"


def test_outbox_in_an_uncreatable_directory_degrades_to_memory_and_says_so(
    make_domain, start_service, subscribe
):
    path = "/etc/hostname/outbox.sqlite"  # under a regular file: never a directory
    assert Path("/etc/hostname").is_file()
    dom = make_domain()
    _, collector = subscribe()
    service = start_service(outbox={"path": path})
    port = service.health_port
    collector.wait_for(lambda e: e.instance_uuid == dom.UUIDString())  # the snapshot
    dom.create()
    dom.suspend()
    collector.wait_for(
        lambda e: e.instance_uuid == dom.UUIDString() and e.transition is Transition.PAUSED
    )
    assert [e.transition for e in collector.of(dom.UUIDString(), resync=False)] == [
        Transition.STARTED,
        Transition.PAUSED,
    ]

    errors = [line for line in service.lines if " ERROR " in line]
    assert len(errors) == 1, service.log
    assert path in errors[0] and "in memory" in errors[0], errors[0]
    status, body = healthz(port)
    assert status == 503, body
    assert any("outbox" in problem and path in problem for problem in body["problems"]), body
    sample = metrics(port)
    assert sample["hypervisor_notifier_outbox_durable"] == 0.0
    print(f"\nuncreatable outbox: error logged: {errors[0].strip()}\n  /healthz {status} {body}")
    # Not durable and nothing left: a clean stop is still a success.
    assert service.stop() == 0, service.log


@contextlib.contextmanager
def tmpfs(directory: Path, size: str) -> Iterator[Path]:
    directory.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(directory)],
        check=True,
        timeout=10,
    )
    try:
        yield directory
    finally:
        if subprocess.run(["umount", str(directory)], check=False, timeout=10).returncode:
            subprocess.run(["umount", "-l", str(directory)], check=True, timeout=10)


def fill(directory: Path) -> int:
    """Write a file until the filesystem is full; return its size."""
    result = subprocess.run(
        ["dd", "if=/dev/zero", f"of={directory / 'filler'}", "bs=4096"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert "No space left on device" in result.stderr, result.stderr
    return (directory / "filler").stat().st_size


def file_sizes(directory: Path) -> dict[str, int]:
    return {path.name: path.stat().st_size for path in sorted(directory.iterdir())}


#: Big enough for a start's resync of thousands of other processes' nova guests
#: (the shared test driver may hold them: a listing benchmark defines 5,000).
OUTBOX_FS_SIZE = "16m"


def start_with_fresh_wal(start_service, collector, uuids, outbox_path: Path, **options):
    """Start the service on ``outbox_path`` so that its WAL is empty, and healthy.

    A first service records the states (its start resync may write megabytes if
    the shared driver holds many guests; past 1,000 pages SQLite checkpoints and
    then reuses its WAL, needing no new space: a full disk would go unnoticed).
    Stopped, it leaves no WAL; the second publishes no change at start, so its
    WAL grows from nothing with the next events.
    """
    first = start_service(outbox={"path": str(outbox_path)}, **options)
    for uuid in uuids:
        collector.wait_for(lambda e, uuid=uuid: e.instance_uuid == uuid)
    assert first.stop() == 0, first.log
    service = start_service(outbox={"path": str(outbox_path)}, **options)
    service.wait_for_log("resync (connected):")
    port = service.health_port
    wait_for_health(port, 200)
    return service, port


def test_disk_full_under_the_outbox_degrades_to_memory_and_says_so(
    tmp_path, make_domain, start_service, subscribe
):
    domains = running_domains(make_domain, 2)
    uuids = [d.UUIDString() for d in domains]
    _, collector = subscribe()
    with tmpfs(tmp_path / "small", OUTBOX_FS_SIZE) as small:
        outbox_path = small / "outbox.sqlite"
        service, port = start_with_fresh_wal(start_service, collector, uuids, outbox_path)
        try:
            files_before = file_sizes(small)
            filler = fill(small)

            # Events after the disk filled up: every one must still arrive.
            burst = Burst(domains, calls=200)
            burst.start()
            burst.finish()
            sentinel_received(make_domain, collector)
            for uuid in uuids:
                assert [e.transition for e in collector.of(uuid, resync=False)] == (
                    burst.expected[uuid]
                )
            status, body = healthz(port)
            durable = metrics(port)["hypervisor_notifier_outbox_durable"]
            files_after = file_sizes(small)
            errors = [line.strip() for line in service.lines if " ERROR " in line]
            print(
                f"\ndisk full: {filler} bytes of filler; outbox files before {files_before}, "
                f"after {files_after}; {burst.calls} events after the disk filled, all "
                f"received; /healthz {status} {body}; outbox_durable {durable}; "
                f"errors logged: {errors}"
            )
            assert status == 503, body
            assert any("outbox" in p and OUTBOX_PROBLEM in p for p in body["problems"]), body
            assert durable == 0.0
            # One error, from the outbox: the publisher goes on undisturbed.
            outbox_errors = [
                line for line in errors if "hypervisor_notifier.notifier.outbox" in line
            ]
            assert len(outbox_errors) == 1, service.log
            assert "disk is full" in outbox_errors[0]
        finally:
            service.stop()
        # The abandoned file was moved aside: a next start neither republishes its
        # entries (confirmed since) nor trusts its states (they stopped following).
        assert not outbox_path.exists()
        assert len(list(small.glob("outbox.sqlite.unusable-*Z"))) == 1


class HoldingProxy:
    """A TCP proxy to the broker that can hold what the broker sends (its acks).

    Arguments:
        target: ``(host, port)`` of the broker.
    """

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.holding = threading.Event()
        self._closing = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def hold(self) -> None:
        """Keep what the broker sends from now on, until :meth:`release`."""
        self.holding.set()

    def release(self) -> None:
        self.holding.clear()

    def close(self) -> None:
        self._closing.set()
        self.listener.close()

    def _accept(self) -> None:
        while not self._closing.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()

    def _pump(self, client: socket.socket, upstream: socket.socket) -> None:
        held = bytearray()
        with client, upstream, selectors.DefaultSelector() as selector:
            selector.register(client, selectors.EVENT_READ)
            selector.register(upstream, selectors.EVENT_READ)
            while not self._closing.is_set():
                if held and not self.holding.is_set():
                    client.sendall(held)
                    held.clear()
                for key, _ in selector.select(0.02):
                    try:
                        data = key.fileobj.recv(65536)
                    except OSError:
                        return
                    if not data:
                        return
                    if key.fileobj is client:
                        upstream.sendall(data)
                    elif self.holding.is_set() or held:
                        held += data
                    else:
                        client.sendall(data)


def test_disk_full_found_by_a_confirm_degrades_the_outbox_quietly(
    tmp_path, make_domain, start_service, subscribe
):
    (dom,) = running_domains(make_domain, 1)
    _, collector = subscribe()
    proxy = HoldingProxy(("127.0.0.1", 5672))
    options = {
        "transport_url": f"rabbit://guest:guest@127.0.0.1:{proxy.port}/",
        # One message in flight: the publisher waits for its ack and nothing else.
        "publisher": {"confirm_window": "1"},
    }
    try:
        with tmpfs(tmp_path / "small", OUTBOX_FS_SIZE) as small:
            with precondition("a healthy service with a durable outbox"):
                service, port = start_with_fresh_wal(
                    start_service,
                    collector,
                    [dom.UUIDString()],
                    small / "outbox.sqlite",
                    **options,
                )
            try:
                with precondition("events put, uncommitted, on a full disk, acks held"):
                    proxy.hold()
                    dom.suspend()  # published; its ack is held
                    dom.resume()  # committed by the publisher's next flush; then the
                    time.sleep(0.5)  # publisher, its window full, waits for the ack only
                    fill(small)
                    dom.suspend()  # put, not committed: nothing flushes until the ack
                    time.sleep(0.2)
                    proxy.release()  # the ack: confirm() commits, on a full disk
                    sentinel_received(make_domain, collector)
                    assert [
                        e.transition for e in collector.of(dom.UUIDString(), resync=False)
                    ] == [
                        Transition.PAUSED,
                        Transition.RESUMED,
                        Transition.PAUSED,
                    ]
                    status, body = healthz(port)
                    assert status == 503 and OUTBOX_PROBLEM in str(body), body
                errors = [line.strip() for line in service.lines if " ERROR " in line]
                print(f"\ndisk full found by a confirm: errors logged: {errors}")
                # One error, the outbox's; the publisher goes on undisturbed.
                assert len(errors) == 1 and OUTBOX_PROBLEM in errors[0], service.log
                assert "publisher failed" not in service.log, service.log
            finally:
                service.stop()
    finally:
        proxy.close()


def test_restart_after_a_degraded_outbox_publishes_what_the_subscriber_missed(
    tmp_path, make_domain, start_service, subscribe
):
    trigger, dom = running_domains(make_domain, 2)
    _, collector = subscribe()

    def last_state() -> PowerState:
        return collector.of(dom.UUIDString())[-1].power_state

    with tmpfs(tmp_path / "small", OUTBOX_FS_SIZE) as small:
        outbox_path = small / "outbox.sqlite"
        with precondition("a healthy service with a durable outbox"):
            service, port = start_with_fresh_wal(
                start_service, collector, [trigger.UUIDString(), dom.UUIDString()], outbox_path
            )
        try:
            with precondition("the outbox degrades when the disk is full"):
                fill(small)
                trigger.suspend()  # its commit fails: the outbox goes on in memory
                wait_for_health(port, 503)
                assert metrics(port)["hypervisor_notifier_outbox_durable"] == 0.0
            with precondition("a change while degraded reaches the subscriber"):
                dom.suspend()  # published from memory: the file still says RUNNING
                sentinel_received(make_domain, collector)
                assert last_state() is PowerState.PAUSED
        finally:
            with precondition("a clean stop, every event confirmed"):
                assert service.stop() == 0, service.log
        (small / "filler").unlink()  # the operator frees the disk ...
        dom.resume()  # ... and meanwhile, with no service running, the guest resumes
        restarted = start_service(outbox={"path": str(outbox_path)})
        try:
            with precondition("a restart on the freed disk"):
                restarted.wait_for_log("resync (connected):")
                sentinel_received(make_domain, collector)
            print(
                f"\nrestart after a degraded outbox: the subscriber holds {last_state().name}, "
                f"the guest is {real_power_state(dom).name}; {resync_lines(restarted).strip()}"
            )
            # The guest runs; the subscriber must not be left believing it paused.
            assert last_state() is real_power_state(dom) is PowerState.RUNNING
        finally:
            restarted.stop()  # before the filesystem is unmounted
