"""A broker that blocks publishers (a memory alarm): events wait, then flow, in order.

The alarm is raised on a private node of this module's own: on the shared one
it would block every other test's publishers on the machine.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import pytest

from hypervisor_notifier.events import Transition

from .conftest import private_node
from .privaterabbit import PrivateRabbit


@pytest.fixture(scope="module")
def private_broker(tmp_path_factory: pytest.TempPathFactory):
    """Overrides conftest's session-wide node: this module's own, as it is alarmed here."""
    yield from private_node(tmp_path_factory, tls=False)


@contextlib.contextmanager
def memory_alarm(node: PrivateRabbit) -> Iterator[Callable[[], str]]:
    """Set ``node``'s memory watermark so low that it blocks every publisher; restore after."""
    watermark = node.ctl("eval", "vm_memory_monitor:get_vm_memory_high_watermark().").strip()
    node.ctl("set_vm_memory_high_watermark", "0.000001")
    try:
        yield lambda: node.ctl("set_vm_memory_high_watermark", watermark)
    finally:
        node.ctl("set_vm_memory_high_watermark", watermark)


def test_events_wait_while_the_broker_blocks_publishing_then_flow_in_order(
    private_broker, private_names, make_domain, start_service, subscribe
):
    dom = make_domain()
    _, collector = subscribe(transport_url=private_broker.url)
    service = start_service(transport_url=private_broker.url)
    collector.wait_for(lambda e: e.instance_uuid == dom.UUIDString())

    with memory_alarm(private_broker) as clear_alarm:
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
