"""Hypervisor backends, loaded by name through stevedore.

A backend is an entry point in the ``hypervisor_notifier.backends``
namespace whose target is a :class:`~hypervisor_notifier.backends.base.Backend`
subclass. Third-party packages add backends by declaring one.
"""

from __future__ import annotations

from oslo_config import cfg
from stevedore import driver, extension

from hypervisor_notifier.backends.base import Backend

NAMESPACE = "hypervisor_notifier.backends"


class UnknownBackend(LookupError):
    """No installed backend has the requested name."""

    def __init__(self, name: str, installed: list[str]) -> None:
        self.name = name
        self.installed = installed
        super().__init__(
            f"unknown backend {name!r} in [DEFAULT] backend; installed backends: "
            f"{', '.join(installed) or 'none'}"
        )


def installed_backends() -> list[str]:
    """Return the names of the backends installed in this environment, sorted."""
    return sorted(extension.ExtensionManager(NAMESPACE).names())


def load_backend(conf: cfg.ConfigOpts, name: str | None = None) -> Backend:
    """Load and instantiate the backend ``name`` (default: ``[DEFAULT] backend``).

    Raises :class:`UnknownBackend`, listing the installed ones, when no entry
    point has that name. An installed backend whose import fails (its
    hypervisor binding is missing) raises that ImportError unchanged.
    """
    name = name or conf.backend
    installed = installed_backends()
    # Checked first: stevedore would log its own warning for an unknown name.
    if name not in installed:
        raise UnknownBackend(name, installed)
    manager = driver.DriverManager(
        NAMESPACE,
        name,
        invoke_on_load=True,
        invoke_args=(conf,),
        on_load_failure_callback=_reraise,
    )
    backend: Backend = manager.driver
    return backend


def _reraise(_manager: object, _entrypoint: object, exc: Exception) -> None:
    raise exc
