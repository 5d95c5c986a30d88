"""``hypervisor-notifier-nova-compute``: nova's own nova-compute, the adapter installed first."""

import shutil
import subprocess
import sys
from pathlib import Path
from unittest import mock

import nova.version
from nova import test
from nova.virt import driver as virt_driver

from hypervisor_notifier.cmd import nova_compute


class NovaComputeCommandTest(test.NoDBTestCase):
    def test_it_installs_the_adapter_then_runs_nova_computes_main(self) -> None:
        seen = []

        def nova_main() -> None:
            listener = virt_driver.ComputeDriver.register_event_listener
            seen.append(getattr(listener, "hypervisor_notifier_original", None))

        with mock.patch("nova.cmd.compute.main", nova_main):
            nova_compute.main()

        self.assertEqual(1, len(seen))
        self.assertIsNotNone(seen[0], "nova's main ran before the adapter was installed")

    def test_the_installed_command_is_nova_compute(self) -> None:
        command = shutil.which(
            "hypervisor-notifier-nova-compute", path=str(Path(sys.executable).parent)
        )
        self.assertIsNotNone(command)

        result = subprocess.run([command, "--version"], capture_output=True, text=True, timeout=60)

        self.assertEqual(
            (0, nova.version.version_string()), (result.returncode, result.stdout.strip())
        )
