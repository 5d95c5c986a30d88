"""The ESX backend: VM lifecycle changes and guest faults from an ESXi host or vCenter.

nova's VMware driver has no lifecycle events: it only polls. This backend
gives VMware compute hosts what libvirt hosts have. Install the ``esx`` extra
(pyVmomi): importing this package imports it, so only a host configured with
``backend = esx`` does (the entry point ``esx`` names
:class:`~hypervisor_notifier.backends.esx.backend.EsxBackend` through this
package).

- :mod:`.backend`: the vSphere session, its PropertyCollector filter and
  event collector, and what it reads from them;
- :mod:`.translate`: what each vSphere event or pending question means
  (doc/source/faults.rst, "ESX").
"""

from hypervisor_notifier.backends.esx.backend import EsxBackend, LoginFailed

__all__ = ["EsxBackend", "LoginFailed"]
