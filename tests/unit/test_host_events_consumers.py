"""Per-guest consumers are not surprised by host events nor by a vanished guest.

The masakari consumer's subscriber is fed the bodies a notifier publishes
across an outage (its broker-free dispatcher: no broker needed); masakari is
never asked for anything. (The nova adapter's test is in tests/nova: nova's
own ComputeManager.)
"""

from __future__ import annotations

from typing import Any

from hypervisor_notifier import wire
from hypervisor_notifier.consumer import masakari
from hypervisor_notifier.consumer.dispatcher import Decision
from hypervisor_notifier.events import PowerState, Transition, utcnow
from hypervisor_notifier.host_events import HostChange, HostEvent, HostObservation
from tests.factories import make_event


class Client:
    """A masakari client that records what it is asked to send."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    def send(self, notification: dict[str, Any]) -> str:
        self.sent.append(notification)
        return "accepted"


def host_event(change: HostChange, seq: int) -> HostEvent:
    return HostEvent.from_observation(
        HostObservation(change, "end of file", occurred_at=utcnow()),
        host="compute1", hypervisor="libvirt", seq=seq,
    )  # fmt: skip


def test_an_outage_and_a_vanished_guest_never_become_a_masakari_notification():
    client = Client()
    consumer = masakari.MasakariConsumer(client, "rabbit://127.0.0.1:5672/", "q")  # type: ignore[arg-type]
    vanished = make_event(transition=Transition.VANISHED, power_state=PowerState.NOSTATE,
                          reason="RESYNC", detail="MISSING", resync=True, seq=2)  # fmt: skip
    failed = make_event(reason="STOPPED", detail="FAILED", seq=4)

    decisions = [
        consumer.subscriber.dispatcher.dispatch(wire.encode(event))
        for event in (
            host_event(HostChange.DISCONNECTED, 1),
            vanished,
            host_event(HostChange.CONNECTED, 3),
            failed,
        )
    ]

    assert decisions == [Decision.ACK] * 4
    # Only the guest failure reached masakari: not the outage, not the vanished guest.
    assert [n["payload"]["instance_uuid"] for n in client.sent] == [failed.instance_uuid]
    # The outage's two host events are logged and counted ignored, with the vanished guest.
    assert consumer.stats[masakari.Outcome.IGNORED] == 3
