"""Backends are found by name in the entry points' metadata; only the configured one is loaded."""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
import sys
import textwrap

import pytest
from oslo_config import cfg

from hypervisor_notifier import conf as config
from hypervisor_notifier.backends import (
    NAMESPACE,
    UnknownBackend,
    install_hint,
    installed_backends,
    load_backend,
)


@pytest.fixture
def conf() -> cfg.ConfigOpts:
    """The service's options, read from no file at all."""
    opts = cfg.ConfigOpts()
    config.register_opts(opts)
    opts([], default_config_files=[], default_config_dirs=[])
    return opts


def test_libvirt_is_installed():
    assert "libvirt" in installed_backends()


def test_an_unknown_name_raises_unknown_backend_listing_the_installed(conf):
    with pytest.raises(UnknownBackend) as excinfo:
        load_backend(conf, "hyperv")

    assert "hyperv" in str(excinfo.value)
    assert "libvirt" in str(excinfo.value)


def test_the_configured_backend_name_is_used_by_default(conf):
    conf.set_override("backend", "xen")

    with pytest.raises(UnknownBackend, match="xen"):
        load_backend(conf)


#: In a fresh interpreter where pyVim/pyVmomi cannot be imported (a libvirt-only host).
BLOCKED_PYVMOMI = textwrap.dedent(
    """
    import importlib.abc, json, logging, sys

    class Blocker(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("pyVim", "pyVmomi"):
                raise ImportError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, Blocker())
    logging.basicConfig(level=logging.DEBUG)
    from hypervisor_notifier.backends import MissingBinding, backend_class, installed_backends

    report = {"installed": installed_backends()}
    report["libvirt"] = backend_class("libvirt").name
    report["esx_imported"] = "hypervisor_notifier.backends.esx" in sys.modules
    try:
        backend_class("esx")
    except MissingBinding as exc:
        report["esx"] = str(exc)
    print(json.dumps(report))
    """
)


def test_backends_are_listed_without_importing_them_and_a_missing_binding_names_the_extra():
    result = subprocess.run(
        [sys.executable, "-c", BLOCKED_PYVMOMI], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)

    assert report["installed"] == ["esx", "libvirt"]
    assert report["libvirt"] == "libvirt"
    assert not report["esx_imported"]  # listing and loading libvirt did not touch it
    assert "ERROR" not in result.stderr, result.stderr
    assert "pip install 'hypervisor-notifier[esx]'" in report["esx"]
    assert "pyVim" in report["esx"]  # and why


def test_a_third_party_backend_without_such_an_extra_names_the_missing_module():
    entry_point = importlib.metadata.EntryPoint("acme", "acme_hv.backend:Acme", NAMESPACE)

    assert install_hint(entry_point, "acme_sdk") == "install the Python module acme_sdk"
