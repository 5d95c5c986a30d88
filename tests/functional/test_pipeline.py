"""The real service, the real libvirtd (test driver) and the real RabbitMQ, end to end."""

from __future__ import annotations

import threading

import oslo_messaging
from oslo_config import cfg

from hypervisor_notifier.events import PowerState, Transition

from .conftest import BROKER_URL, TIMEOUT, TOPIC

# (libvirt call, transition, power state, libvirt detail) for each change.
CHANGES = [
    ("create", Transition.STARTED, PowerState.RUNNING, "BOOTED"),
    ("suspend", Transition.PAUSED, PowerState.PAUSED, "PAUSED"),
    ("resume", Transition.RESUMED, PowerState.RUNNING, "UNPAUSED"),
    ("shutdown", Transition.STOPPED, PowerState.SHUTDOWN, "SHUTDOWN"),
    ("create", Transition.STARTED, PowerState.RUNNING, "BOOTED"),
    ("destroy", Transition.STOPPED, PowerState.SHUTDOWN, "DESTROYED"),
]


def test_each_change_reaches_the_subscriber_once_in_order(
    names, make_domain, start_service, subscribe
):
    dom, sentinel = make_domain(), make_domain()
    _, collector = subscribe()
    service = start_service()
    # At start the service publishes a snapshot: our domain, shut off.
    snapshot = collector.wait_for(lambda e: e.instance_uuid == dom.UUIDString())
    assert (snapshot.resync, snapshot.transition, snapshot.power_state) == (
        True, Transition.STOPPED, PowerState.SHUTDOWN,
    )  # fmt: skip

    for call, *_ in CHANGES:
        getattr(dom, call)()
    # One ordered stream per host: once the sentinel's event is in, all of dom's are.
    sentinel.create()
    collector.wait_for(lambda e: e.instance_uuid == sentinel.UUIDString() and not e.resync)

    pushed = collector.of(dom.UUIDString(), resync=False)
    assert [(e.transition, e.power_state, e.detail) for e in pushed] == [
        (transition, power_state, detail) for _, transition, power_state, detail in CHANGES
    ]
    assert {e.host for e in pushed} == {names["host"]}
    assert [e.seq for e in pushed] == sorted({e.seq for e in pushed})
    assert len({e.event_id for e in pushed}) == len(pushed)

    assert service.stop() == 0, service.log
    assert "every event was confirmed" in service.log


def test_oslo_messaging_listener_receives_the_same_events(
    broker, names, make_domain, start_service, subscribe
):
    dom = make_domain()
    _, collector = subscribe()
    received: list[tuple[str, str, dict]] = []
    done = threading.Event()

    class Endpoint:
        def info(self, ctxt, publisher_id, event_type, payload, metadata):
            received.append((publisher_id, event_type, payload))
            # Host events (hypervisor.host.connected at start) name no instance.
            if (
                payload.get("instance_uuid") == dom.UUIDString()
                and payload["transition"] == "paused"
            ):
                done.set()

    conf = cfg.ConfigOpts()
    transport = oslo_messaging.get_notification_transport(conf, url=BROKER_URL)
    # Our exchange is durable; oslo declares it durable only with this set.
    conf.set_override("amqp_durable_queues", True, group="oslo_messaging_rabbit")
    target = oslo_messaging.Target(topic=f"{TOPIC}.{names['host']}", exchange=names["exchange"])
    listener = oslo_messaging.get_notification_listener(
        transport, [target], [Endpoint()], executor="threading"
    )
    listener.start()
    try:
        start_service()
        collector.wait_for(lambda e: e.instance_uuid == dom.UUIDString())  # the snapshot
        dom.create()
        dom.suspend()
        assert done.wait(TIMEOUT), f"oslo listener got {received}"
        collector.wait_for(
            lambda e: e.instance_uuid == dom.UUIDString() and e.transition is Transition.PAUSED
        )
    finally:
        listener.stop()
        listener.wait()
        transport.cleanup()
        broker.queue_delete(f"{TOPIC}.{names['host']}.info")

    ours = collector.of(dom.UUIDString())
    theirs = [item for item in received if item[2].get("instance_uuid") == dom.UUIDString()]
    # The notifier's start reaches an oslo listener too.
    assert ("hypervisor.host.connected", "started") in [
        (event_type, payload["reason"]) for _, event_type, payload in received
    ]
    assert [payload for _, _, payload in theirs] == [e.to_payload() for e in ours]
    assert [payload["transition"] for _, _, payload in theirs] == ["stopped", "started", "paused"]
    for (publisher_id, event_type, _), event in zip(theirs, ours, strict=True):
        assert publisher_id == f"hypervisor-notifier.{names['host']}"
        assert event_type == f"hypervisor.instance.{event.transition.value}"
