"""Carry out the chaos schedule's faults on the private broker and the service.

Every fault is undone before the next one starts (a killed service or
broker is started again, a policy cleared, an alarm lifted, the clock
stepped back).

The service runs under libfaketime with a timestamp file: writing an offset
("-3600") to the file steps its wall clock (only the wall clock: its
monotonic clock is left alone, as an NTP step leaves it).
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import sqlite3
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import amqp.exceptions

from hypervisor_notifier import wire
from hypervisor_notifier.events import LifecycleEvent, MalformedEvent
from tests.service_process import ServiceProcess

from .checker import Window
from .rabbit import ChaosRabbit
from .schedule import Fault

FAKETIME_LIB = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1")
POLICY = "hn-chaos-reject"
#: Seconds a restarted service may take to connect and resync.
RESTART_TIMEOUT = 60.0
#: Seconds to wait for the host queue to drain before deleting it.
EMPTY_QUEUE_TIMEOUT = 60.0


def outbox_events(path: Path) -> dict[str, LifecycleEvent]:
    """The events in an outbox file no service has open: event_id -> event.

    Read from a copy (with its WAL): opening the file itself could change it
    (a checkpoint at close), and a read-only open needs a shared-memory file
    a clean stop removed.
    """
    if not path.exists():
        return {}
    with tempfile.TemporaryDirectory(prefix="hn-chaos-outbox-") as scratch:
        copy = Path(scratch) / path.name
        for suffix in ("", "-wal"):
            if Path(f"{path}{suffix}").exists():
                shutil.copyfile(f"{path}{suffix}", f"{copy}{suffix}")
        db = sqlite3.connect(copy)
        try:
            rows = db.execute("SELECT body FROM events").fetchall()
        finally:
            db.close()
    found = {}
    for (body,) in rows:
        with contextlib.suppress(MalformedEvent):
            event = wire.decode(body)
            found[event.event_id] = event
    return found


class ClockedService:
    """The service as a child process under a clock the test steps.

    ``left`` collects the events found in the outbox each time the service
    was stopped or killed: accepted, whether or not it had published them.

    Arguments:
        config: Its configuration file.
        outbox: The ``[outbox] path`` of that file.
        clock_file: The libfaketime timestamp file (created at offset 0).

    """

    def __init__(self, config: Path, outbox: Path, clock_file: Path) -> None:
        self.config = config
        self.outbox = outbox
        self.clock_file = clock_file
        clock_file.write_text("+0\n")
        self.env = {
            "LD_PRELOAD": str(FAKETIME_LIB),
            "FAKETIME_TIMESTAMP_FILE": str(clock_file),
            "FAKETIME_NO_CACHE": "1",
            "FAKETIME_DONT_FAKE_MONOTONIC": "1",
        }
        self.runs: list[ServiceProcess] = []
        self.left: dict[str, LifecycleEvent] = {}
        self.unreadable: list[str] = []

    @property
    def current(self) -> ServiceProcess:
        return self.runs[-1]

    def start(self) -> ServiceProcess:
        self.runs.append(ServiceProcess(self.config, env=self.env))
        return self.current

    def _collect_left(self) -> None:
        try:
            self.left.update(outbox_events(self.outbox))
        except sqlite3.Error as exc:  # a schema this test does not know: say so in the report
            self.unreadable.append(str(exc))

    def kill(self) -> None:
        """SIGKILL; record what it left in its outbox."""
        self.current.process.kill()
        self.current.process.wait()
        self._collect_left()

    def stop(self) -> None:
        """SIGTERM (it publishes what it can first); record what it left in its outbox."""
        self.current.stop()
        self._collect_left()

    def pause(self) -> None:
        """SIGSTOP: it writes nothing to the broker until :meth:`resume`."""
        self.current.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT after :meth:`pause`."""
        self.current.process.send_signal(signal.SIGCONT)

    def step_clock(self, offset: int) -> None:
        """Set the service's wall clock ``offset`` seconds away from the real one."""
        self.clock_file.write_text(f"{offset:+d}\n")


class Injector:
    """Apply faults to ``node`` and ``service``, recording when each began and ended.

    Arguments:
        node: The private broker.
        service: The service under test.
        queue: The host queue the service publishes to.
        log: Called with one line per fault (the test prints them).

    """

    def __init__(
        self, node: ChaosRabbit, service: ClockedService, queue: str, log: Callable[[str], None]
    ) -> None:
        self.node = node
        self.service = service
        self.queue = queue
        self.log = log
        #: Each fault applied, on the ``time.monotonic()`` clock.
        self.windows: list[Window] = []

    def apply(self, fault: Fault) -> None:
        """Inject ``fault``, hold it, undo it, then wait out its calm."""
        started = time.monotonic()
        getattr(self, f"_{fault.kind}")(fault)
        self.windows.append(Window(fault.kind, started, time.monotonic()))
        self.log(f"fault {len(self.windows)}: {fault} ({time.monotonic() - started:.1f} s)")
        time.sleep(fault.gap)

    def _service_kill(self, fault: Fault) -> None:
        self.service.kill()
        time.sleep(fault.hold)
        self.service.start()

    def _stop_app(self, fault: Fault) -> None:
        self.node.stop_app()
        try:
            time.sleep(fault.hold)
        finally:
            self.node.start_app()

    def _broker_kill(self, fault: Fault) -> None:
        self.node.kill9()
        try:
            time.sleep(fault.hold)
        finally:
            self.node.restart()

    def _reject_publish(self, fault: Fault) -> None:
        pattern = "^" + self.queue.replace(".", r"\.") + "$"
        # Never a one-step policy: it would drop what the queue holds beyond the
        # limit, events the broker had confirmed (see PrivateRabbit.reject_publish).
        self.node.reject_publish(POLICY, pattern, int(fault.param))
        try:
            time.sleep(fault.hold)
        finally:
            self.node.ctl("clear_policy", POLICY)

    def _queue_delete(self, fault: Fault) -> None:
        # A deleted queue takes with it what it holds, what it delivered and was not
        # acked yet, and what was routed to it and not yet enqueued, which the broker
        # confirms to the publisher all the same: lost for any publisher (what an
        # operator deleting a queue loses; doc/source/operations.rst). So the queue is
        # deleted only with the service paused (SIGSTOP), the queue drained and acked,
        # and nothing unconfirmed: what the fault tests is the publishes that follow,
        # into no queue (returned, the queue declared again, resent).
        # The subscriber catches up first (it may be waiting out a reconnect backoff),
        # so the service is paused for a moment only.
        deadline = time.monotonic() + EMPTY_QUEUE_TIMEOUT
        while self._ready_messages() and time.monotonic() < deadline:
            time.sleep(0.05)
        self.service.pause()
        try:
            deleted = self._delete_drained_queue(deadline)
        finally:
            self.service.resume()
        if not deleted:
            self.log(f"queue_delete: {self.queue} never drained; not deleted")
            return
        time.sleep(fault.hold)

    def _ready_messages(self) -> int:
        """Messages ready in the host queue (0 if there is none)."""
        try:
            return self.node.channel_call("queue_declare", self.queue, passive=True).message_count
        except amqp.exceptions.NotFound:
            return 0

    def _delete_drained_queue(self, deadline: float) -> bool:
        """Delete the host queue once drained; False if it was not by ``deadline``."""
        # Twice in a row: a publish the paused service wrote just before is read by then.
        drained = 0
        while drained < 2:
            if time.monotonic() > deadline:
                return False
            drained = drained + 1 if self._drained() else 0
            if not drained:
                time.sleep(0.05)
        try:
            # if_empty still: a ready message left would make it refuse, not destroy.
            self.node.channel_call("queue_delete", self.queue, if_empty=True)
        except amqp.exceptions.PreconditionFailed:
            return False
        return True

    def _drained(self) -> bool:
        """No message in the host queue (ready or unacked), no publish unconfirmed."""
        rows = self.node.ctl(
            "list_queues", "--no-table-headers", "name", "messages_ready",
            "messages_unacknowledged",
        ).splitlines()  # fmt: skip
        held = sum(
            int(count) for row in rows if row.split("\t")[0] == self.queue
            for count in row.split("\t")[1:]
        )  # fmt: skip
        channels = self.node.ctl("list_channels", "--no-table-headers", "messages_unconfirmed")
        unconfirmed = sum(int(row) for row in channels.split() if row.isdigit())
        return held == 0 and unconfirmed == 0

    def _alarm(self, fault: Fault) -> None:
        if fault.param == "memory":
            set_limit, on, off = "set_vm_memory_high_watermark", "0.0000001", "0.4"
        else:
            set_limit, on, off = "set_disk_free_limit", "100000GB", "50MB"
        self.node.ctl(set_limit, on)
        try:
            time.sleep(fault.hold)
        finally:
            self.node.ctl(set_limit, off)

    def _clock_step(self, fault: Fault) -> None:
        offset, how = fault.param.split()
        # A step bites at a restart: a clock-based seq starts again from the clock.
        for step in (int(offset), 0):
            self.service.step_clock(step)
            if how == "kill":
                self.service.kill()
            else:
                self.service.stop()
            # Up and publishing on that clock (its start resync done) before the next step.
            self.service.start().wait_for_log("resync (", timeout=RESTART_TIMEOUT)
            if step:
                time.sleep(fault.hold)
