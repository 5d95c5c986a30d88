"""Real guests that fail: their faults reach a Subscriber through the real RabbitMQ.

TCG guests under libvirtd ``qemu:///system`` (the image of
tools/guest-image.sh, its /init told what to do on the kernel command line)
fail for real: an i6300esb watchdog fed once, a kernel panic told by the
pvpanic device, disks on a full tmpfs. The real ``hypervisor-notifier``
publishes what libvirt reports; a Subscriber receives it.
"""

from __future__ import annotations

import unittest
from typing import Any

from hypervisor_notifier.events import LifecycleEvent, Transition
from hypervisor_notifier.faults import Fault, FaultEvent
from tests.e2e.guest import LifecycleClock, guest_image, notifier_and_subscriber, small_tmpfs

#: A TCG guest on a loaded machine boots in seconds, or a minute; only a bound.
TIMEOUT = 300.0


def fault_of(uuid: str, fault: Fault, **details: Any):
    """Matches the fault event of guest ``uuid`` whose details include ``details``."""

    def matches(event: Any) -> bool:
        return (
            isinstance(event, FaultEvent)
            and (event.instance_uuid, event.fault) == (uuid, fault)
            and details.items() <= dict(event.details).items()
        )

    return matches


def lifecycle_of(uuid: str, transition: Transition):
    """Matches the lifecycle event of guest ``uuid`` with ``transition``."""

    def matches(event: Any) -> bool:
        return isinstance(event, LifecycleEvent) and (event.instance_uuid, event.transition) == (
            uuid,
            transition,
        )

    return matches


class GuestFaultsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls) -> None:
        cls.image = guest_image()
        cls.guests = LifecycleClock()
        cls.addClassCleanup(cls.guests.close)

    def setUp(self) -> None:
        self.received = self.enterContext(notifier_and_subscriber())

    def test_a_watchdog_no_longer_fed_gives_a_watchdog_event_with_its_action(self) -> None:
        devices = "<watchdog model='i6300esb' action='pause'/>"
        with self.guests.guest(self.image, mode="watchdog", devices=devices) as dom:
            uuid = dom.UUIDString()
            fault = self.received.wait_for(fault_of(uuid, Fault.WATCHDOG), TIMEOUT)
            paused = self.received.wait_for(lifecycle_of(uuid, Transition.PAUSED), TIMEOUT)

        self.assertEqual(("WATCHDOG", "PAUSE", {"action": "pause"}),
                         (fault.reason, fault.detail, dict(fault.details)))  # fmt: skip
        self.assertEqual(fault.event_type, "hypervisor.instance.watchdog")
        # The pause it caused follows as a lifecycle event of its own.
        self.assertEqual(("SUSPENDED", "WATCHDOG"), (paused.reason, paused.detail))
        self.assertGreater(paused.seq, fault.seq)

    def test_a_guest_that_panics_with_pvpanic_gives_a_crashed_event_with_the_details(
        self,
    ) -> None:
        devices = "<panic model='isa'/>"
        with self.guests.guest(
            self.image, mode="panic", devices=devices, on_crash="preserve"
        ) as dom:
            uuid = dom.UUIDString()
            crashed = self.received.wait_for(lifecycle_of(uuid, Transition.CRASHED), TIMEOUT)

        self.assertEqual(("CRASHED", "PANICKED"), (crashed.reason, crashed.detail))
        self.assertEqual(
            {"on_crash": "preserve", "panic_model": "isa", "state": "crashed",
             "state_reason": "panicked"},
            dict(crashed.details),
        )  # fmt: skip

    def test_disks_on_a_full_tmpfs_give_io_errors_naming_the_device_and_the_error(self) -> None:
        # vdb (error_policy report) is written first: the guest sees the error and
        # goes on to vda (error_policy stop), which pauses it.
        tmpfs = self.enterContext(small_tmpfs("1m"))
        devices = ""
        for target, policy in (("vda", "stop"), ("vdb", "report")):
            path = tmpfs / f"{target}.raw"
            with path.open("wb") as disk:
                disk.truncate(64 << 20)  # sparse: the tmpfs fills as the guest writes
            devices += f"""<disk type='file' device='disk'>
              <driver name='qemu' type='raw' cache='writeback' error_policy='{policy}'/>
              <source file='{path}'/><target dev='{target}' bus='virtio'/></disk>"""
        with self.guests.guest(
            self.image, mode="ioerror", cmdline="hn_disks=vdb,vda", devices=devices
        ) as dom:
            uuid = dom.UUIDString()
            reported = self.received.wait_for(
                fault_of(uuid, Fault.IO_ERROR, device="virtio-disk1"), TIMEOUT
            )
            stopped = self.received.wait_for(
                fault_of(uuid, Fault.IO_ERROR, device="virtio-disk0"), TIMEOUT
            )
            paused = self.received.wait_for(lifecycle_of(uuid, Transition.PAUSED), TIMEOUT)

        self.assertEqual(
            ("IO_ERROR_REASON", "PAUSE",
             {"device": "virtio-disk0", "path": str(tmpfs / "vda.raw"), "action": "pause",
              "error": "enospc"}),
            (stopped.reason, stopped.detail, dict(stopped.details)),
        )  # fmt: skip
        # QEMU tells ENOSPC only for a disk whose errors can stop the guest
        # (error_policy stop or enospc): libvirt's reason is then empty.
        self.assertEqual(
            ("REPORT", {"device": "virtio-disk1", "path": str(tmpfs / "vdb.raw"),
                        "action": "report", "error": ""}),
            (reported.detail, dict(reported.details)),
        )  # fmt: skip
        self.assertEqual(("SUSPENDED", "IOERROR"), (paused.reason, paused.detail))
