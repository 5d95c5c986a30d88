"""How soon nova hears that a guest shut itself down: our path beside nova's own.

Usage: ``python benchmarks/nova_detection.py [--guests N]`` (or ``tox -e nova-bench``;
needs nova, libvirt-python, libvirtd's ``qemu:///system`` and RabbitMQ).

A benchmark, not a test. N real qemu guests (TCG, default 3) boot at once
under ``qemu:///system`` and power themselves off from inside (busybox
``poweroff -f``, as ``shutdown -h now`` ends): libvirt reports SHUTDOWN/GUEST,
then STOPPED/SHUTDOWN. Two listeners watch the same guests in the same run:

1. **hypervisor-notifier**: the real service (a subprocess) on
   ``qemu:///system``, RabbitMQ, and :class:`NovaEventSource` in this process
   handing nova ``LifecycleEvent`` objects to a callback.
2. **nova in-tree**: nova's own ``nova.virt.libvirt.host.Host`` (a
   subprocess, threading mode) with a lifecycle event handler, as
   nova-compute's libvirt driver runs it: every STOPPED is held 15 s.

Detection time = handler call - the STOPPED event as a libvirt client of
this process saw it. Both clocks are ``time.monotonic()``, one clock for the
whole system on Linux, so the subprocess's stamps can be subtracted. The
third row, nova's periodic ``_sync_power_states`` poll, is not measured: a
guest that stops at a random moment waits up to ``sync_power_state_interval``
(600 s by default), 300 s on average.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import libvirt  # noqa: E402
from harness import Stats, progress  # noqa: E402
from nova.virt import event as virtevent  # noqa: E402 - imports no eventlet: the child still picks threading

from tests.e2e.guest import GUEST_URI, LifecycleClock, guest_image, notifier_and_adapter  # noqa: E402

TIMEOUT = 180.0
POLL_INTERVAL = 600.0


def in_tree_listener() -> None:
    """Child: nova's libvirt Host; one line per lifecycle event: uuid transition monotonic."""
    from nova import monkey_patch

    monkey_patch.patch(backend="threading")
    import nova.conf
    from nova.virt.libvirt import host

    nova.conf.CONF([], project="nova")

    def handler(event: object) -> None:
        print("EVENT", event.uuid, event.transition, time.monotonic(), flush=True)  # type: ignore[attr-defined]

    listener = host.Host(GUEST_URI, read_only=True, lifecycle_event_handler=handler)
    listener.initialize()
    listener.get_connection()
    print("READY", flush=True)
    sys.stdin.read()  # until the parent closes it
    # nova's thread pools would keep the process alive: nothing to clean up here.
    os._exit(0)


def read_in_tree(process: subprocess.Popen[str], lines: queue.Queue[list[str]]) -> None:
    """Queue the child's protocol lines (split in words); skip anything else it prints."""
    assert process.stdout is not None
    for line in process.stdout:
        words = line.split()
        if words and words[0] in ("READY", "EVENT"):
            lines.put(words[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--guests", type=int, default=3, help="guests booted at once")
    parser.add_argument("--in-tree-listener", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.in_tree_listener:
        in_tree_listener()
        return
    image = guest_image()
    clock = LifecycleClock()
    ours: queue.Queue[tuple[str, float]] = queue.Queue()
    in_tree: queue.Queue[list[str]] = queue.Queue()

    def on_nova_event(event: virtevent.LifecycleEvent) -> None:
        if event.transition == virtevent.EVENT_LIFECYCLE_STOPPED:
            ours.put((event.uuid, time.monotonic()))

    with notifier_and_adapter(on_nova_event):
        child = subprocess.Popen(
            [sys.executable, __file__, "--in-tree-listener"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        threading.Thread(target=read_in_tree, args=(child, in_tree), daemon=True).start()
        try:
            assert in_tree.get(timeout=TIMEOUT) == []
            progress(f"booting {args.guests} guests that power themselves off")
            results = run(clock, image, args.guests, ours, in_tree)
        finally:
            child.stdin.close()  # type: ignore[union-attr]
            try:
                child.wait(10)
            except subprocess.TimeoutExpired:
                child.kill()
    report(args.guests, *results)
    clock.close()


def run(
    clock: LifecycleClock,
    image: Path,
    count: int,
    ours: queue.Queue[tuple[str, float]],
    in_tree: queue.Queue[list[str]],
) -> tuple[list[float], list[float]]:
    """Boot ``count`` guests at once; detection times (ms) of both paths."""
    with contextlib.ExitStack() as guests:
        uuids = [guests.enter_context(clock.guest(image)).UUIDString() for _ in range(count)]
        ours_at: dict[str, float] = {}
        while len(ours_at) < count:
            uuid, at = ours.get(timeout=TIMEOUT)
            ours_at[uuid] = at
        progress("ours: every guest's STOPPED handed to nova; waiting for nova's in-tree path")
        in_tree_at: dict[str, float] = {}
        while len(in_tree_at) < count:
            uuid, transition, at = in_tree.get(timeout=TIMEOUT)
            if int(transition) == virtevent.EVENT_LIFECYCLE_STOPPED and uuid in uuids:
                in_tree_at[uuid] = float(at)
        stopped = {u: clock.wait_for(u, libvirt.VIR_DOMAIN_EVENT_STOPPED, TIMEOUT) for u in uuids}
    return (
        [(ours_at[u] - stopped[u]) * 1000 for u in uuids],
        [(in_tree_at[u] - stopped[u]) * 1000 for u in uuids],
    )


def report(count: int, ours: list[float], in_tree: list[float]) -> None:
    print(f"\nguest-initiated shutdown -> nova's handler, {count} qemu guests (ms)")
    print(f"  {'path':<44}{'p50':>8}{'p90':>8}{'p99':>8}{'max':>8}{'min':>8}")
    print(Stats.of(ours).row("hypervisor-notifier -> RabbitMQ -> adapter"))
    print(Stats.of(in_tree).row("nova in-tree libvirt events (15 s hold)"))
    print(f"  {'nova periodic poll (not measured)':<44}{POLL_INTERVAL / 2 * 1000:8.0f}"
          f"{'':>16}{POLL_INTERVAL * 1000:8.0f}{0:8.0f}")  # fmt: skip
    goal = "met" if max(ours) < 1000 else "NOT met"
    print(f"\ngoal under 1 s end to end: {goal}; in-tree / ours at p50: "
          f"{Stats.of(in_tree).p50 / Stats.of(ours).p50:.0f}x")  # fmt: skip


if __name__ == "__main__":
    main()
