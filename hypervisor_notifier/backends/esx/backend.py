"""The ESX backend's session: VM changes and events from an ESXi host or vCenter, via pyVmomi.

One thread (``esx-dispatch``, the skeleton of
:class:`~hypervisor_notifier.backends.dispatch.DispatchingBackend`) owns the
vSphere session:

1. log in (backoff; the server's certificate is verified unless told otherwise);
2. one PropertyCollector filter over a container view of the VMs in scope
   (``name``, ``config.instanceUuid``, ``runtime.powerState``,
   ``runtime.question``, ``guest.toolsRunningStatus``) and over an
   EventHistoryCollector of the same scope (its ``latestPage``, the event
   types of :mod:`.translate`);
3. a resync (``listener.on_resync``), which lists every VM with its power
   state in one ``RetrievePropertiesEx`` over the view;
4. ``WaitForUpdatesEx`` in a loop: each change of a VM's power state is an
   observation, and the changes of one update set are reported together.
   The events tell why: a ``VmGuestShutdownEvent`` (the guest was asked to
   shut down) is reported as ``shutting_down`` and names the ``stopped``
   that follows, where an API power-off is a ``VmPoweredOffEvent``. Guest
   faults (an HA reset, a failed power-on, a question) are translated by
   :mod:`.translate`.

A lost session (``NotAuthenticated``, a restarted vCenter, a network error)
is logged in again with backoff, the filter recreated, and a resync run.
Instance identity is the VM's ``config.instanceUuid`` (what nova uses); its
name is ``instance_name``.
"""

from __future__ import annotations

import logging
import ssl
from typing import Any

from oslo_config import cfg
from pyVim import connect
from pyVmomi import vim, vmodl

from hypervisor_notifier import events
from hypervisor_notifier.backends import base, dispatch
from hypervisor_notifier.backends.esx import translate
from hypervisor_notifier.conf import esx as esx_conf

LOG = logging.getLogger(__name__)

PC = vmodl.query.PropertyCollector
VM_PROPERTIES = ["name", "config.instanceUuid", "runtime.powerState"]
#: Watched, beside what a listing reads: a question stops the guest until answered;
#: the guest agent (VMware Tools) comes and goes.
WATCHED_PROPERTIES = [*VM_PROPERTIES, "runtime.question", translate.TOOLS]
POWER_STATES = translate.POWER_STATES
EVENT_TYPES = translate.EVENT_TYPES


class LoginFailed(Exception):
    """The vSphere API could not be reached or refused the login; the text says why."""


class EsxBackend(dispatch.DispatchingBackend):
    """Watch the VMs of an ESXi host or vCenter (``[esx]`` options)."""

    name = "esx"

    def __init__(self, conf: cfg.ConfigOpts) -> None:
        self.opts = conf[esx_conf.GROUP]
        super().__init__(conf, reconnect_interval_max=self.opts.reconnect_interval_max)
        self._si: Any = None
        self._filter: Any = None
        # Kept: every read of ``si.content`` is a round trip to the server.
        self._pc: Any = None
        self._view: Any = None
        self._vms: dict[str, translate.Vm] = {}
        self._last_event_key = -1

    @property
    def endpoint(self) -> str:
        """``user@host:port``: who logs in where (never the password)."""
        return f"{self.opts.username}@{self.opts.host}:{self.opts.port}"

    def list_instances(self) -> list[base.InstanceState]:
        """Every VM in scope with its power state: one RetrievePropertiesEx over the view."""
        if self._si is None:
            raise base.BackendUnavailable(f"not logged in to {self.endpoint}")
        listing = []
        for obj in self._retrieve_vms():
            props = {prop.name: prop.val for prop in obj.propSet}
            uuid = props.get("config.instanceUuid")
            if not uuid:
                continue  # a VM being created has no config yet
            raw = str(props.get("runtime.powerState", ""))
            power_state = POWER_STATES.get(raw, (None, events.PowerState.NOSTATE, ""))[1]
            listing.append(base.InstanceState(uuid, props.get("name", ""), power_state, raw))
        return listing

    # -- the skeleton's hooks: dispatch thread -----------------------------------

    @property
    def _close_timeout(self) -> float:
        return float(self.opts.wait_seconds + self.opts.connect_timeout)

    def _lost(self, reason: str) -> str:
        return f"lost vSphere session {self.endpoint}: {reason}"

    def _describe(self, exc: Exception) -> str:
        return _describe(exc)

    def _open(self) -> None:
        """Log in and watch; a failure after the login is a lost session."""
        try:
            self._login()
        except LoginFailed as exc:
            raise dispatch.ConnectFailed(str(exc)) from None
        try:
            self._filter = self._watch()
        except LoginFailed as exc:
            raise dispatch.ConnectFailed(str(exc)) from None
        except Exception as exc:
            raise dispatch.ConnectFailed(self._lost(_describe(exc))) from None
        LOG.info("logged in to vSphere %s; watching %d VMs", self.endpoint, len(self._vms))

    def _wait_for_items(self) -> list[dispatch.QueueItem]:
        """Poll vSphere (one WaitForUpdatesEx) unless items wait already."""
        if not self._queue.empty():
            return []
        found: list[base.GuestObservation] = []
        # Returned once the update set is read whole: a session lost halfway
        # leaves nothing to report after the next session's resync.
        self._wait(found.append)
        return [dispatch.Observed(observation) for observation in found]

    def _login(self) -> None:
        opts = self.opts
        try:
            self._si = connect.SmartConnect(
                host=opts.host,
                port=opts.port,
                user=opts.username,
                pwd=opts.password,
                sslContext=self._ssl_context(),
                httpConnectionTimeout=opts.connect_timeout + opts.wait_seconds,
            )
        except vim.fault.InvalidLogin:
            raise LoginFailed(f"vSphere {self.endpoint} refused the login") from None
        except ssl.SSLCertVerificationError as exc:
            raise LoginFailed(
                f"certificate of vSphere {opts.host}:{opts.port} does not verify "
                f"({exc.verify_message}); set [esx] ca_file (or insecure = true, for tests)"
            ) from None
        except Exception as exc:
            raise LoginFailed(f"cannot reach vSphere {self.endpoint}: {_describe(exc)}") from None

    def _ssl_context(self) -> ssl.SSLContext:
        if self.opts.insecure:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            return context
        return ssl.create_default_context(cafile=self.opts.ca_file)

    def _scope(self, content: Any) -> Any:
        """The object whose VMs are reported: a cluster, a host, or the root folder."""
        for kind, name in (
            (vim.ClusterComputeResource, self.opts.cluster),
            (vim.HostSystem, self.opts.esx_host),
        ):
            if not name:
                continue
            view = content.viewManager.CreateContainerView(content.rootFolder, [kind], True)
            try:
                for candidate in view.view:
                    if candidate.name == name:
                        return candidate
            finally:
                view.Destroy()
            raise LoginFailed(f"vSphere {self.endpoint} has no {kind.__name__} named {name!r}")
        return content.rootFolder

    def _watch(self) -> Any:
        """Create the view, the event collector and the filter; read the initial state."""
        content = self._si.RetrieveContent()
        self._pc = content.propertyCollector
        scope = self._scope(content)
        self._view = content.viewManager.CreateContainerView(scope, [vim.VirtualMachine], True)
        collector = content.eventManager.CreateCollectorForEvents(
            vim.event.EventFilterSpec(
                eventTypeId=EVENT_TYPES,
                entity=vim.event.EventFilterSpec.ByEntity(entity=scope, recursion="all"),
            )
        )
        # A page of 1,000 events (the default is 10): a burst of changes between two
        # updates must not push a guest's shutdown event off the page unseen.
        collector.SetCollectorPageSize(maxCount=1000)
        spec = PC.FilterSpec(
            objectSet=[self._view_object_spec(), PC.ObjectSpec(obj=collector)],
            # The collector's spec first: govmomi's simulator (0.24) matches a
            # change against every spec in order and, for a spec of another
            # type, looks the object up where session objects (the collector)
            # are missing, and panics. vSphere itself ignores the order.
            propSet=[
                PC.PropertySpec(type=vim.event.EventHistoryCollector, pathSet=["latestPage"]),
                PC.PropertySpec(type=vim.VirtualMachine, pathSet=WATCHED_PROPERTIES),
            ],
        )
        pc_filter = self._pc.CreateFilter(spec, partialUpdates=False)
        self._vms, self._last_event_key = {}, -1
        # The first wait returns everything as it is now: a baseline, not changes.
        # (Its event page may be out of order: only its newest key matters.)
        self._version = ""
        self._wait(lambda _observation: None)
        return pc_filter

    def _view_object_spec(self) -> Any:
        traversal = PC.TraversalSpec(
            name="view", path="view", skip=False, type=vim.view.ContainerView
        )
        return PC.ObjectSpec(obj=self._view, skip=True, selectSet=[traversal])

    def _retrieve_vms(self) -> list[Any]:
        collector = self._pc
        spec = PC.FilterSpec(
            objectSet=[self._view_object_spec()],
            propSet=[PC.PropertySpec(type=vim.VirtualMachine, pathSet=VM_PROPERTIES)],
        )
        result = collector.RetrievePropertiesEx([spec], PC.RetrieveOptions())
        objects = list(result.objects) if result else []
        while result is not None and result.token:
            result = collector.ContinueRetrievePropertiesEx(result.token)
            objects += list(result.objects)
        return objects

    def _wait(self, report: Any) -> None:
        """Wait for one batch of updates (at most ``wait_seconds``) and report its changes."""
        options = PC.WaitOptions(maxWaitSeconds=self.opts.wait_seconds)
        update_set = self._pc.WaitForUpdatesEx(self._version, options)
        if update_set is None:
            return
        self._version = update_set.version
        vm_changes, pages = [], []
        for filter_update in update_set.filterSet or []:
            for update in filter_update.objectSet or []:
                if isinstance(update.obj, vim.event.EventHistoryCollector):
                    pages += [change.val or [] for change in update.changeSet or []]
                else:
                    vm_changes.append(update)
        # Events first: they explain the power-state changes of the same batch.
        for page in pages:
            self._note_events(page, report)
        for update in vm_changes:
            self._note_vm(update, report)

    def _note_events(self, page: list[Any], report: Any) -> None:
        # A page is newest first; each event comes once more in later pages.
        for event in sorted(page, key=lambda e: e.key):
            if event.key <= self._last_event_key:
                continue
            self._last_event_key = event.key
            vm = self._vms.get(event.vm.vm._moId) if event.vm and event.vm.vm else None
            if vm is None or not vm.uuid:
                continue
            for observation in translate.event_observations(event, vm):
                report(observation)

    def _note_vm(self, update: Any, report: Any) -> None:
        key = update.obj._moId
        if update.kind == "leave":
            self._vms.pop(key, None)  # destroyed or moved out of scope: a resync tells
            return
        props = {change.name: change.val for change in update.changeSet or []}
        vm = self._vms.get(key)
        if vm is None:
            vm = self._vms[key] = translate.Vm(
                props.get("config.instanceUuid") or "", props.get("name", ""), ""
            )
        vm.name = props.get("name", vm.name)
        vm.uuid = props.get("config.instanceUuid") or vm.uuid
        raw = props.get("runtime.powerState")
        if raw is not None and str(raw) != vm.power_state:
            self._note_power_state(vm, str(raw), report)
        if not vm.uuid:
            return
        for name, translated in (
            ("runtime.question", translate.question_observation),
            (translate.TOOLS, translate.tools_observation),
        ):
            found = translated(props[name], vm) if name in props else None
            if found is not None:
                report(found)

    @staticmethod
    def _note_power_state(vm: translate.Vm, raw: str, report: Any) -> None:
        vm.power_state = raw
        vm.told.clear()  # a message of the guest's past run is news again
        if vm.power_state not in POWER_STATES or not vm.uuid:
            return
        transition, power_state, reason = POWER_STATES[vm.power_state]
        if vm.pending and vm.pending[1] == vm.power_state:
            reason = vm.pending[0]  # e.g. VmGuestShutdownEvent, not an API power-off
        vm.pending = None
        report(translate.lifecycle(vm, transition, power_state, reason, vm.power_state))

    def _release(self) -> None:
        """Destroy the filter and log out, quietly."""
        si, self._si, self._pc, self._view = self._si, None, None, None
        pc_filter, self._filter = self._filter, None
        if pc_filter is not None:
            _quietly(pc_filter.Destroy)
        if si is not None:
            _quietly(connect.Disconnect, si)


def _describe(exc: Exception) -> str:
    """A one-line description of an exception (vSphere faults carry ``msg``)."""
    text = getattr(exc, "msg", None) or str(exc) or ""
    return f"{type(exc).__name__}: {text}".strip().rstrip(":")


def _quietly(call: Any, *args: Any) -> None:
    try:
        call(*args)
    except Exception:  # cleanup of a session that may already be dead
        LOG.debug("vSphere cleanup call failed", exc_info=True)
