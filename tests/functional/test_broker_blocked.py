"""A broker that blocks publishers (a memory alarm): events wait, then flow, in order."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Callable, Iterator

from hypervisor_notifier.events import Transition


def rabbitmqctl(*args: str) -> str:
    return subprocess.run(
        ["rabbitmqctl", "-q", *args], check=True, capture_output=True, text=True
    ).stdout.strip()


@contextlib.contextmanager
def memory_alarm() -> Iterator[Callable[[], str]]:
    """Set the memory watermark so low that the broker blocks every publisher; restore after."""
    watermark = rabbitmqctl("eval", "vm_memory_monitor:get_vm_memory_high_watermark().")
    rabbitmqctl("set_vm_memory_high_watermark", "0.000001")
    try:
        yield lambda: rabbitmqctl("set_vm_memory_high_watermark", watermark)
    finally:
        rabbitmqctl("set_vm_memory_high_watermark", watermark)


def test_events_wait_while_the_broker_blocks_publishing_then_flow_in_order(
    make_domain, start_service, subscribe
):
    dom = make_domain()
    _, collector = subscribe()
    service = start_service()
    collector.wait_for(lambda e: e.instance_uuid == dom.UUIDString())

    with memory_alarm() as clear_alarm:
        dom.create()  # the first publish after the alarm: the broker blocks us
        service.wait_for_log("blocks publishing")
        dom.suspend()
        dom.resume()
        status, health = service.healthz()
        assert status == 503
        assert any("blocks publishing" in problem for problem in health["problems"])
        assert collector.of(dom.UUIDString(), resync=False) == []
        clear_alarm()
        service.wait_for_log("unblocked publishing")

    collector.wait_for(lambda _: len(collector.of(dom.UUIDString(), resync=False)) >= 3)
    assert [e.transition for e in collector.of(dom.UUIDString(), resync=False)] == [
        Transition.STARTED, Transition.PAUSED, Transition.RESUMED,
    ]  # fmt: skip
    assert service.process.poll() is None
