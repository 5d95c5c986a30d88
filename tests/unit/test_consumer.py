"""The consumer package runs on hosts without hypervisor bindings, and pulls in no service code."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

#: Run in a fresh interpreter, where libvirt and pyVmomi cannot be imported.
SCRIPT = textwrap.dedent(
    """
    import importlib.abc
    import json
    import sys

    BLOCKED = ("libvirt", "libvirtmod", "libvirt_qemu", "libvirtmod_qemu", "pyVmomi")

    class Blocker(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"{name} is not installed on this host")
            return None

    sys.meta_path.insert(0, Blocker())
    try:
        import libvirt
    except ImportError:
        blocked = True
    else:
        blocked = False

    import hypervisor_notifier.consumer
    import hypervisor_notifier.consumer.nova
    from hypervisor_notifier.consumer import Subscriber

    print(json.dumps({"blocked": blocked, "modules": sorted(sys.modules)}))
    """
)

FORBIDDEN = (
    "libvirt",
    "pyVmomi",
    "hypervisor_notifier.backends",
    "hypervisor_notifier.notifier",
)


def test_consumer_and_nova_adapter_import_without_libvirt_pyvmomi_backends_or_notifier():
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["blocked"], "the test failed to make libvirt unimportable"

    loaded = [
        module
        for module in report["modules"]
        if any(module == name or module.startswith(f"{name}.") for name in FORBIDDEN)
    ]

    assert loaded == []


def test_the_consumer_unit_tests_run_where_libvirt_is_not_installed():
    tests = sorted(str(path) for path in Path(__file__).parent.glob("test_consumer*.py"))
    script = SCRIPT.split("try:\n")[0] + textwrap.dedent(
        f"""
        import pytest
        sys.exit(pytest.main(["-q", "-p", "no:cacheprovider", "--collect-only", *{tests!r}]))
        """
    )

    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert "test_consumer_dispatcher.py::" in result.stdout, result.stdout
