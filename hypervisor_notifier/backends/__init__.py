"""Hypervisor backends, found by name among the installed entry points.

A backend is an entry point in the ``hypervisor_notifier.backends``
namespace whose target is a :class:`~hypervisor_notifier.backends.base.Backend`
subclass. Third-party packages add backends by declaring one.

The names are read from the packages' metadata, without importing any
backend: a host with only libvirt's binding never imports the ESX backend
(whose import would fail on pyVmomi). Only the configured backend is loaded.
"""

from __future__ import annotations

import importlib.metadata

from oslo_config import cfg

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


class MissingBinding(ImportError):
    """The backend is installed, but the hypervisor binding it imports is not.

    Arguments:
        name: The backend's name.
        install: What to install, e.g. ``pip install 'hypervisor-notifier[esx]'``.
        reason: The import error's text.

    """

    def __init__(self, name: str, install: str, reason: str) -> None:
        self.install = install
        super().__init__(
            f"backend {name!r} ([DEFAULT] backend) cannot load its hypervisor binding "
            f"({reason}): {install}",
            name=name,
        )


def _entry_points() -> dict[str, importlib.metadata.EntryPoint]:
    """The backends' entry points by name, read from metadata (nothing imported)."""
    return {ep.name: ep for ep in importlib.metadata.entry_points(group=NAMESPACE)}


def installed_backends() -> list[str]:
    """Return the names of the backends installed in this environment, sorted."""
    return sorted(_entry_points())


def install_hint(entry_point: importlib.metadata.EntryPoint, missing: str | None) -> str:
    """What to install for ``entry_point``'s binding: its package's extra of the same name.

    A package without such an extra (a third-party backend) gets the name of
    the missing module instead.
    """
    dist = entry_point.dist
    extras = (dist.metadata.get_all("Provides-Extra") or []) if dist else []
    if dist is not None and entry_point.name in extras:
        return f"pip install '{dist.name}[{entry_point.name}]'"
    return f"install the Python module {missing or 'it imports'}"


def backend_class(name: str) -> type[Backend]:
    """Import the backend ``name`` (only that one) and return its class.

    Raises :class:`UnknownBackend`, listing the installed ones, when no entry
    point has that name, and :class:`MissingBinding` (an ImportError saying
    which extra to install) when its hypervisor binding is missing.
    """
    entry_points = _entry_points()
    try:
        entry_point = entry_points[name]
    except KeyError:
        raise UnknownBackend(name, sorted(entry_points)) from None
    try:
        cls: type[Backend] = entry_point.load()
    except ImportError as exc:
        raise MissingBinding(name, install_hint(entry_point, exc.name), str(exc)) from exc
    return cls


def load_backend(conf: cfg.ConfigOpts, name: str | None = None) -> Backend:
    """Load and instantiate the backend ``name`` (default: ``[DEFAULT] backend``).

    Raises as :func:`backend_class`.
    """
    return backend_class(name or conf.backend)(conf)
