"""The founding scenario for real: a qemu guest runs its own poweroff, nova learns at once.

A TCG guest under libvirtd ``qemu:///system`` powers itself off from inside;
the real ``hypervisor-notifier`` publishes SHUTDOWN/GUEST and STOPPED to the
real RabbitMQ; the nova adapter hands nova's callback a STOPPED without the
15 s hold. Prints the time from libvirt's STOPPED event to the callback.
"""

from __future__ import annotations

import queue
import sys
import time
import unittest
from typing import Any

import libvirt
from nova.virt import event as virtevent

from tests.e2e.guest import LifecycleClock, guest_image, notifier_and_adapter
from tests.service_process import TIMEOUT

BOOT_TIMEOUT = 120.0


class GuestShutsItselfDownTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls) -> None:
        cls.image = guest_image()
        cls.clock = LifecycleClock()
        cls.addClassCleanup(cls.clock.close)

    def setUp(self) -> None:
        self.calls: queue.Queue[tuple[Any, float]] = queue.Queue()
        self.source = self.enterContext(
            notifier_and_adapter(lambda event: self.calls.put((event, time.monotonic())))
        )

    def _calls_until_stopped(self, uuid: str) -> list[tuple[Any, float]]:
        """nova's calls for this test's guest until its STOPPED (other guests' are skipped)."""
        calls: list[tuple[Any, float]] = []
        while not calls or calls[-1][0].transition != virtevent.EVENT_LIFECYCLE_STOPPED:
            call = self.calls.get(timeout=BOOT_TIMEOUT)
            if call[0].uuid == uuid:
                calls.append(call)
        return calls

    def test_guest_poweroff_reaches_nova_without_the_hold(self) -> None:
        with self.clock.guest(self.image) as dom:
            uuid = dom.UUIDString()
            calls = self._calls_until_stopped(uuid)
            stopped_at = self.clock.wait_for(uuid, libvirt.VIR_DOMAIN_EVENT_STOPPED, TIMEOUT)

        # qemu starts paused and is resumed: nova hears RESUMED and STARTED, then STOPPED.
        self.assertEqual(
            [
                virtevent.EVENT_LIFECYCLE_RESUMED,
                virtevent.EVENT_LIFECYCLE_STARTED,
                virtevent.EVENT_LIFECYCLE_STOPPED,
            ],
            [event.transition for event, _ in calls],
        )
        self.assertEqual({uuid}, {event.uuid for event, _ in calls})
        # What libvirt itself reported: the guest asked to power off.
        self.assertIn(
            (libvirt.VIR_DOMAIN_EVENT_SHUTDOWN, libvirt.VIR_DOMAIN_EVENT_SHUTDOWN_GUEST),
            self.clock.events(uuid),
        )
        self.assertEqual((1, 0), (self.source.hold.delivered_at_once, self.source.hold.held))
        called_at = calls[-1][1]
        print(
            f"\n  guest poweroff: libvirt STOPPED -> nova callback "
            f"{(called_at - stopped_at) * 1000:.1f} ms (nova in-tree: 15 s hold; "
            f"periodic poll: up to 600 s)",
            file=sys.stderr,
        )
