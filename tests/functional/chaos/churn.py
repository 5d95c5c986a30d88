"""Guests churning on the libvirtd test driver, every call recorded in a history.

The churn thread picks a guest and a call valid for its state (start,
suspend, resume, destroy, shutdown, and now and then undefine it and define
a new one), makes the call, and appends it to the guest's
:class:`~.checker.Guest` history with the transition the hypervisor reports
for it. It goes at a random pace with bursts as fast as libvirt answers.
The guests are its own (unique names); :meth:`Churn.cleanup` removes them.
"""

from __future__ import annotations

import random
import threading

import libvirt

from hypervisor_notifier.events import PowerState, Transition

from ..conftest import domain_xml, unique
from .checker import Guest, Operation

#: power state -> (call, transition it reports, state after, weight).
CALLS: dict[PowerState, tuple[tuple[str, Transition | None, PowerState, int], ...]] = {
    PowerState.SHUTDOWN: (
        ("create", Transition.STARTED, PowerState.RUNNING, 8),
        ("undefine", None, PowerState.SHUTDOWN, 1),
    ),
    PowerState.RUNNING: (
        ("suspend", Transition.PAUSED, PowerState.PAUSED, 6),
        ("destroy", Transition.STOPPED, PowerState.SHUTDOWN, 1),
        ("shutdown", Transition.STOPPED, PowerState.SHUTDOWN, 1),
    ),
    PowerState.PAUSED: (
        ("resume", Transition.RESUMED, PowerState.RUNNING, 6),
        ("destroy", Transition.STOPPED, PowerState.SHUTDOWN, 1),
    ),
}
LIBVIRT_STATE = {
    libvirt.VIR_DOMAIN_RUNNING: PowerState.RUNNING,
    libvirt.VIR_DOMAIN_PAUSED: PowerState.PAUSED,
    libvirt.VIR_DOMAIN_SHUTOFF: PowerState.SHUTDOWN,
}


def real_state(dom: libvirt.virDomain) -> PowerState:
    """A test-driver domain's power state, as the checker counts it."""
    return LIBVIRT_STATE.get(dom.state()[0], PowerState.NOSTATE)


class Churn(threading.Thread):
    """Change ``count`` guests' states at random until :meth:`finish`.

    Arguments:
        conn: A read-write connection to the test driver, held open by the
            caller for the whole test (the driver forgets domains otherwise).
        rng: The source of the churn's choices.
        count: How many guests are defined at any time.
        rate: Calls per second between bursts.

    """

    def __init__(
        self, conn: libvirt.virConnect, rng: random.Random, count: int = 10, rate: float = 40.0
    ) -> None:
        super().__init__(name="churn", daemon=True)
        self.conn = conn
        self.rng = rng
        self.rate = rate
        self.guests: dict[str, Guest] = {}
        self.domains: dict[str, libvirt.virDomain] = {}
        self.error: BaseException | None = None
        self._halt = threading.Event()
        self._lock = threading.Lock()
        for _ in range(count):
            self.add_guest()

    def add_guest(self, start: bool = False) -> str:
        """Define a new shut-off guest (and start it); its UUID."""
        dom = self.conn.defineXML(domain_xml(unique("hn-chaos")))
        uuid = dom.UUIDString()
        with self._lock:
            self.domains[uuid] = dom
            self.guests[uuid] = Guest(PowerState.SHUTDOWN)
        if start:
            self._call(uuid, "create", Transition.STARTED, PowerState.RUNNING)
        return uuid

    def run(self) -> None:
        try:
            while not self._halt.is_set():
                burst = self.rng.random() < 0.02
                for _ in range(self.rng.randint(50, 300) if burst else 1):
                    self.step()
                self._halt.wait(self.rng.expovariate(self.rate))
        except BaseException as exc:  # reported by finish()
            self.error = exc

    def step(self) -> None:
        """One call on a random guest, recorded."""
        uuid = self.rng.choice(sorted(self.domains))
        state = PowerState(self.guests[uuid].final)
        calls = CALLS[state]
        call, transition, after, _ = self.rng.choices(calls, [c[3] for c in calls])[0]
        self._call(uuid, call, transition, after)
        if call == "undefine":
            self.add_guest()

    def _call(
        self, uuid: str, call: str, transition: Transition | None, after: PowerState
    ) -> None:
        dom = self.domains[uuid]
        try:
            getattr(dom, call)()
        except libvirt.libvirtError:
            # Refused: the history says so, with the state the guest is really in.
            operation = Operation(call, (), real_state(dom), ok=False)
        else:
            operation = Operation(call, (transition.value,) if transition else (), after)
        with self._lock:
            self.guests[uuid].operations.append(operation)
            if call == "undefine" and operation.ok:
                del self.domains[uuid]

    def halt(self) -> None:
        """Stop churning."""
        self._halt.set()
        if self.is_alive():
            self.join(30)

    def finish(self) -> None:
        """Stop churning; raise what broke the churn, if anything did."""
        self.halt()
        assert not self.is_alive(), "the churn did not stop"
        if self.error is not None:
            raise self.error

    def model_errors(self) -> list[str]:
        """Where the recorded history disagrees with the hypervisor now (should be nowhere)."""
        with self._lock:
            return [
                f"{uuid}: history says {PowerState(self.guests[uuid].final).name}, "
                f"libvirt {real_state(dom).name}"
                for uuid, dom in self.domains.items()
                if real_state(dom) != self.guests[uuid].final
            ]

    def cleanup(self) -> None:
        """Destroy and undefine every guest still defined."""
        for dom in self.domains.values():
            try:
                if dom.isActive():
                    dom.destroy()
                dom.undefine()
            except libvirt.libvirtError:
                pass
