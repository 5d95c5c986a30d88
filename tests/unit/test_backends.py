"""Backends are found by name among the installed entry points."""

from __future__ import annotations

import pytest
from oslo_config import cfg

from hypervisor_notifier import conf as config
from hypervisor_notifier.backends import UnknownBackend, installed_backends, load_backend


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
