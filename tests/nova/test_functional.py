"""nova's own in-memory deployment (API, conductor, scheduler, placement, fake
driver) with the adapter: a guest that stops on the hypervisor shows SHUTOFF
through the API as soon as our event crosses the real RabbitMQ."""

import os
import sys

from nova.compute import power_state
from nova.tests.functional import integrated_helpers

from hypervisor_notifier.consumer import nova as adapter
from tests import bus


class GuestShutdownReachesTheAPITest(integrated_helpers._IntegratedTestBase):
    ADMIN_API = True
    microversion = "latest"

    def _setup_services(self) -> None:
        # Before the compute service starts: its init_host registers nova's callback.
        adapter.install()
        self.bus = self.useFixture(bus.Bus("compute"))
        self.flags(group=adapter.GROUP, **self.bus.adapter_flags())
        self.addCleanup(bus.stop_sources)
        # pip installs nova's etc/ under the environment, not beside the package.
        self.flags(
            api_paste_config=os.path.join(sys.prefix, "etc/nova/api-paste.ini"), group="wsgi"
        )
        super()._setup_services()

    def test_guest_shutdown_shows_shutoff_in_the_api(self) -> None:
        server = self._create_server(networks="none")
        uuid = server["id"]
        source = adapter.SOURCES[id(self.compute.manager.driver)]
        self.assertTrue(source.wait_ready(bus.TIMEOUT))
        # The guest runs `shutdown -h now`: the hypervisor's guest is off, and
        # without an event nova would not know before its next poll.
        self.compute.manager.driver.instances[uuid].state = power_state.SHUTDOWN
        self.assertEqual("ACTIVE", self.api.get_server(uuid)["status"])

        self.bus.publish_guest_shutdown(uuid)
        server = self._wait_for_state_change(server, "SHUTOFF")

        self.assertEqual(power_state.SHUTDOWN, server["OS-EXT-STS:power_state"])
        self.assertEqual(1, source.stats.handed_to_nova)
        self.assertEqual(1, source.hold.delivered_at_once)
