"""Bus events reach nova's real ComputeManager, in threading and eventlet mode.

The path under test: our Publisher -> the real RabbitMQ -> the adapter's
Subscriber -> ComputeManager.handle_events -> handle_lifecycle_event ->
_sync_instance_power_state (recorded, not run: the functional test runs it).
"""

import queue
import threading
from typing import Any

from nova import context, objects, test, utils
from nova.compute import manager, power_state, vm_states
from nova.virt import event as virtevent
from nova.virt import fake
from oslo_utils import uuidutils

from hypervisor_notifier.consumer import nova as adapter
from hypervisor_notifier.events import PowerState, Transition, utcnow
from hypervisor_notifier.host_events import HostChange, HostEvent, HostObservation
from hypervisor_notifier.signing import Signer
from tests import bus

MAIN_THREAD_NATIVE_ID = threading.get_native_id()


class AdapterInComputeManagerTest(test.TestCase):
    stopped_hold = 30.0

    def setUp(self) -> None:
        super().setUp()
        adapter.install()
        self.host = bus.unique("nova-host")
        self.bus = self.useFixture(self._bus())
        self.flags(host=self.host, compute_driver="fake.SmallFakeDriver")
        self.flags(group=adapter.GROUP, **self._adapter_flags())
        self.compute = manager.ComputeManager()
        self.addCleanup(bus.stop_sources)
        self.context = context.get_admin_context()
        self.synced: queue.Queue[tuple[str, int, int]] = queue.Queue()
        self.handled: list[Any] = []
        handle_events = self.compute.handle_events
        self.useFixture(
            test.fixtures.MockPatchObject(
                self.compute,
                "handle_events",
                side_effect=lambda event: (self.handled.append(event), handle_events(event)),
            )
        )
        self.useFixture(
            test.fixtures.MockPatchObject(
                self.compute, "_sync_instance_power_state", side_effect=self._record_sync
            )
        )

    def _bus(self) -> bus.Bus:
        return bus.Bus(self.host)

    def _adapter_flags(self) -> dict[str, Any]:
        return self.bus.adapter_flags(stopped_hold=self.stopped_hold)

    def _record_sync(self, ctxt: Any, instance: Any, vm_power_state: int, **_: Any) -> None:
        self.synced.put((instance.uuid, vm_power_state, threading.get_native_id()))

    def _instance(self, hypervisor_state: int) -> Any:
        instance = objects.Instance(
            context=self.context,
            uuid=uuidutils.generate_uuid(),
            host=self.host,
            vm_state=vm_states.ACTIVE,
            power_state=power_state.RUNNING,
            project_id="project",
            user_id="user",
        )
        instance.create()
        self.compute.driver.instances[instance.uuid] = fake.FakeInstance(
            instance.name, hypervisor_state, instance.uuid
        )
        return instance

    def _listen(self) -> adapter.NovaEventSource:
        self.compute.init_virt_events()
        source = adapter.SOURCES[id(self.compute.driver)]
        self.assertTrue(source.wait_ready(bus.TIMEOUT))
        return source

    def _next_sync(self) -> tuple[str, int, int]:
        return self.synced.get(timeout=bus.TIMEOUT)

    def test_guest_shutdown_reaches_sync_instance_power_state_at_once(self) -> None:
        instance = self._instance(power_state.SHUTDOWN)
        self._listen()

        self.bus.publish_guest_shutdown(instance.uuid)
        uuid, state, native_id = self._next_sync()

        self.assertEqual((instance.uuid, power_state.SHUTDOWN), (uuid, state))
        if utils.concurrency_mode_threading():
            # Called from the adapter's own native thread, as nova's libvirt driver does.
            self.assertNotEqual(MAIN_THREAD_NATIVE_ID, native_id)
        else:
            # Called from a green thread: green threads share the hub's native thread.
            self.assertEqual(MAIN_THREAD_NATIVE_ID, native_id)
        self.assertEqual(
            [virtevent.EVENT_LIFECYCLE_STOPPED], [event.transition for event in self.handled]
        )

    def test_each_transition_reaches_nova_as_its_power_state(self) -> None:
        cases = [
            (Transition.PAUSED, power_state.PAUSED),
            (Transition.RESUMED, power_state.RUNNING),
            (Transition.SUSPENDED, power_state.SUSPENDED),
            (Transition.STARTED, power_state.RUNNING),
        ]
        instances = [self._instance(state) for _, state in cases]
        self._listen()

        for instance, (transition, _) in zip(instances, cases, strict=True):
            self.bus.publish(self.bus.event(instance_uuid=instance.uuid, transition=transition))
        synced = {self._next_sync()[:2] for _ in cases}

        self.assertEqual(
            {(i.uuid, state) for i, (_, state) in zip(instances, cases, strict=True)}, synced
        )

    def test_the_stop_of_a_reboot_is_held_and_cancelled_by_its_start(self) -> None:
        instance = self._instance(power_state.RUNNING)
        source = self._listen()

        self.bus.publish(self.bus.event(instance_uuid=instance.uuid, detail="DESTROYED"))
        self.bus.publish(
            self.bus.event(
                instance_uuid=instance.uuid,
                transition=Transition.STARTED,
                power_state=PowerState.RUNNING,
                detail="BOOTED",
            )
        )
        synced = self._next_sync()

        self.assertEqual((instance.uuid, power_state.RUNNING), synced[:2])
        self.assertEqual(1, source.hold.cancelled)
        self.assertEqual(
            [virtevent.EVENT_LIFECYCLE_STARTED], [event.transition for event in self.handled]
        )

    def test_another_hosts_event_never_reaches_nova(self) -> None:
        victim = self._instance(power_state.SHUTDOWN)
        marker = self._instance(power_state.SHUTDOWN)
        source = self._listen()
        other = bus.unique("other-host")

        # Another host's notifier: its own routing key, so not our queue.
        self.bus.publish(
            self.bus.event(host=other, instance_uuid=victim.uuid, reason="VmGuestShutdownEvent")
        )
        # Routed to us, naming another host: misrouted (signed by a notifier) or forged.
        self.bus.inject(
            self.bus.event(host=other, instance_uuid=victim.uuid, reason="VmGuestShutdownEvent"),
            routed_as=self.host,
            signer=self.bus.signer,
        )
        self.bus.publish(self.bus.event(instance_uuid=marker.uuid, reason="VmGuestShutdownEvent"))
        synced = self._next_sync()

        self.assertEqual((marker.uuid, power_state.SHUTDOWN), synced[:2])
        self.assertEqual([marker.uuid], [event.uuid for event in self.handled])
        self.assertEqual(1, source.stats.other_host)
        self.assertTrue(self.synced.empty())

    def test_the_drivers_own_lifecycle_events_are_discarded_on_the_bus_source(self) -> None:
        instance = self._instance(power_state.SHUTDOWN)
        source = self._listen()
        other_event = virtevent.InstanceEvent(instance.uuid)

        self.compute.driver.emit_event(
            virtevent.LifecycleEvent(instance.uuid, virtevent.EVENT_LIFECYCLE_STOPPED)
        )
        self.compute.driver.emit_event(other_event)

        self.assertEqual([other_event], self.handled)
        self.assertEqual(1, source.stats.driver_events_discarded)

    def test_driver_source_leaves_nova_as_it_is(self) -> None:
        self.flags(group=adapter.GROUP, source="driver")
        instance = self._instance(power_state.SHUTDOWN)
        self.compute.init_virt_events()
        driver_event = virtevent.LifecycleEvent(instance.uuid, virtevent.EVENT_LIFECYCLE_STOPPED)

        self.compute.driver.emit_event(driver_event)

        self.assertEqual({}, adapter.SOURCES)
        self.assertEqual([driver_event], self.handled)
        self.assertEqual((instance.uuid, power_state.SHUTDOWN), self._next_sync()[:2])

    def test_cleanup_host_stops_the_adapter(self) -> None:
        source = self._listen()

        self.compute.driver.register_event_listener(None)

        self.assertNotIn(id(self.compute.driver), adapter.SOURCES)
        thread = source.subscriber._thread
        thread.join(bus.TIMEOUT)
        self.assertFalse(thread.is_alive())

    def test_transitions_nova_has_no_name_for_are_not_handed_on(self) -> None:
        instance = self._instance(power_state.SHUTDOWN)
        source = self._listen()

        for transition in (Transition.REBOOTED, Transition.CRASHED):
            self.bus.publish(self.bus.event(instance_uuid=instance.uuid, transition=transition))
        self.bus.publish(
            self.bus.event(instance_uuid=instance.uuid, reason="VmGuestShutdownEvent")
        )
        self._next_sync()

        self.assertEqual(
            [virtevent.EVENT_LIFECYCLE_STOPPED], [event.transition for event in self.handled]
        )
        self.assertEqual(2, source.stats.no_nova_transition)

    def test_host_events_and_a_vanished_guest_never_reach_nova(self) -> None:
        vanished = self._instance(power_state.RUNNING)
        marker = self._instance(power_state.SHUTDOWN)
        source = self._listen()

        # The notifier lost libvirtd, reconnected, and its resync no longer lists a guest:
        # nova must not take the silence, the loss or the vanishing for a stop.
        self._publish_host_event(HostChange.DISCONNECTED, "end of file")
        self.bus.publish(
            self.bus.event(instance_uuid=vanished.uuid, transition=Transition.VANISHED,
                           power_state=PowerState.NOSTATE, reason="RESYNC", detail="MISSING",
                           resync=True)
        )  # fmt: skip
        self._publish_host_event(HostChange.CONNECTED, "reconnected")
        self.bus.publish_guest_shutdown(marker.uuid)
        synced = self._next_sync()

        self.assertEqual((marker.uuid, power_state.SHUTDOWN), synced[:2])
        self.assertEqual([marker.uuid], [event.uuid for event in self.handled])
        self.assertEqual(2, source.stats.subscriber.skipped)
        self.assertTrue(self.synced.empty())

    def _publish_host_event(self, change: HostChange, reason: str) -> None:
        seq = self.bus.event().seq  # the host's next seq
        self.bus.publish(
            HostEvent.from_observation(  # type: ignore[arg-type]
                HostObservation(change, reason, occurred_at=utcnow()),
                host=self.host, hypervisor="libvirt", seq=seq,
            )
        )  # fmt: skip

    def test_the_start_line_says_where_each_setting_came_from_without_the_password(self) -> None:
        self._listen()

        (line,) = [
            line
            for line in self.stdlog.logger.output.splitlines()
            if "nova lifecycle events: from the bus" in line
        ]
        for expected in (
            "transport_url from [hypervisor_notifier] transport_url",
            "queue_type from default (classic)",
            "heartbeat from [oslo_messaging_rabbit] heartbeat_timeout_threshold (60 s)",
            "state file from [hypervisor_notifier] state_file",
        ):
            self.assertIn(expected, line)
        self.assertNotIn("guest:guest", line)

    def test_a_bad_adapter_option_fails_nova_compute_start_naming_it(self) -> None:
        self.flags(group=adapter.GROUP, key="too short")

        with self.assertRaisesRegex(
            ValueError, r"^\[hypervisor_notifier\] signing key .* at least 32"
        ):
            self.compute.init_virt_events()
        self.assertEqual({}, adapter.SOURCES)


class SignedEventsInComputeManagerTest(AdapterInComputeManagerTest):
    """With a key in nova.conf, only events signed with it reach nova."""

    key = "k" * 32

    def _bus(self) -> bus.Bus:
        return bus.Bus(self.host, Signer("1", self.key.encode()))

    def _adapter_flags(self) -> dict[str, Any]:
        return {**super()._adapter_flags(), "key": self.key, "key_id": "1"}

    def test_unsigned_forged_and_wrongly_signed_events_never_reach_nova(self) -> None:
        victim = self._instance(power_state.SHUTDOWN)
        marker = self._instance(power_state.SHUTDOWN)
        source = self._listen()
        # What the attacker can do: publish unsigned, sign with a key of its
        # own under the right id, or inject raw messages.
        for signer in (None, Signer("1", b"w" * 32)):
            forger = self.bus.start_publisher(self.host, signer)
            forger.outbox.put(self.bus.event(instance_uuid=victim.uuid, detail="DESTROYED"))
            # Queued (confirmed) before the marker below, so consumed before it.
            self.assertEqual(0, forger.stop(bus.TIMEOUT))
        self.bus.inject(
            self.bus.event(instance_uuid=victim.uuid, reason="VmGuestShutdownEvent"),
            routed_as=self.host,
            signer=None,
        )
        self.bus.publish_guest_shutdown(marker.uuid)

        self.assertEqual((marker.uuid, power_state.SHUTDOWN), self._next_sync()[:2])
        self.assertEqual([marker.uuid], [event.uuid for event in self.handled])
        self.assertEqual(3, source.subscriber.stats.unverified)
        self.assertIsNotNone(source.verifier)
