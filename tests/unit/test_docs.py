"""The documentation shows what the code does: its example message is what the publisher sends."""

from __future__ import annotations

import json
from pathlib import Path

from hypervisor_notifier import wire
from hypervisor_notifier.events import Transition

EXAMPLES = Path(__file__).resolve().parents[2] / "doc/source/_examples"


def test_the_documented_message_is_what_the_publisher_sends():
    body = (EXAMPLES / "body.json").read_bytes().rstrip(b"\n")

    event = wire.decode(body)

    assert wire.encode(event) == body, "regenerate doc/source/_examples/ with wire.encode"
    inner = json.loads(json.loads(body)["oslo.message"])
    assert inner == json.loads((EXAMPLES / "notification.json").read_text())
    assert event.transition is Transition.STOPPED
