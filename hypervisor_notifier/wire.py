"""How lifecycle events travel on AMQP: names, queue arguments, envelope.

Part of the public wire contract (doc/source/wire.rst). Publisher and consumer both
use it, so the two sides cannot disagree; it imports no hypervisor binding.

- Exchange: a durable topic exchange (``[publisher] exchange``).
- Routing key: ``<topic>.<host>.info``. The exchange, the topic and the queue
  type, as both sides take them: :class:`Topology`.
- Body: the oslo.messaging ``messagingv2`` envelope around a notification
  whose ``event_type`` names the kind of event (:data:`WireEvent`) and whose
  ``payload`` is the event's ``to_payload()``.
"""

from __future__ import annotations

import dataclasses
import json
from json.encoder import encode_basestring_ascii as _quoted
from typing import TYPE_CHECKING, Any

from hypervisor_notifier.canonical_text import canonical_text_and_time
from hypervisor_notifier.events import (
    HOST_EVENT_PREFIX,
    INSTANCE_EVENT_PREFIX,
    LifecycleEvent,
    MalformedEvent,
    Transition,
)
from hypervisor_notifier.faults import Fault, FaultEvent
from hypervisor_notifier.host_events import HostChange, HostEvent
from hypervisor_notifier.signing import SIGNATURE_FIELD

if TYPE_CHECKING:
    from hypervisor_notifier.signing import Signer, Verifier

#: Every kind of event that travels: a guest's state change, a guest's
#: fault, or the hypervisor connection's change.
WireEvent = LifecycleEvent | FaultEvent | HostEvent

PRIORITY = "info"
PUBLISHER_PREFIX = "hypervisor-notifier."
CONTENT_TYPE = "application/json"
OSLO_VERSION = "2.0"
#: Larger bodies are refused before parsing: an event is a few hundred bytes.
MAX_BODY_BYTES = 64 * 1024

QUEUE_TYPES = ("classic", "quorum")


def routing_key(topic: str, host: str) -> str:
    """Return the routing key a host publishes with: ``<topic>.<host>.info``."""
    return f"{topic}.{host}.{PRIORITY}"


def binding_key(topic: str, host: str | None) -> str:
    """Return the binding key for one host's events, or for every host's.

    Every host's binding is ``<topic>.#`` rather than ``<topic>.*.info`` so
    that host names with dots (FQDNs) match too.
    """
    return routing_key(topic, host) if host else f"{topic}.#"


def host_queue_name(topic: str, host: str) -> str:
    """Return the durable per-host queue the publisher declares.

    It differs from the ``<topic>.<host>.info`` queue an oslo.messaging
    notification listener declares, so both can consume every event.
    """
    return f"{topic}.{host}"


def queue_arguments(queue_type: str) -> dict[str, Any]:
    """Return the ``x-arguments`` of a durable queue of ``queue_type``.

    Publisher and subscribers must declare a queue with equal arguments, or
    the broker refuses the second declaration (PRECONDITION_FAILED).
    """
    if queue_type not in QUEUE_TYPES:
        raise ValueError(f"queue type {queue_type!r} is not one of {', '.join(QUEUE_TYPES)}")
    return {"x-queue-type": "quorum"} if queue_type == "quorum" else {}


@dataclasses.dataclass(frozen=True)
class Topology:
    """Where the events travel on the broker: what publisher and subscribers must agree on.

    Arguments:
        exchange: The durable topic exchange (``[publisher] exchange``).
        topic: The first word of every routing key (``[publisher] topic``).
        queue_type: ``classic`` or ``quorum``: every durable per-host queue's.

    Raises:
        ValueError: ``queue_type`` is neither.

    """

    exchange: str = "hypervisor"
    topic: str = "hypervisor_events"
    queue_type: str = "classic"

    def __post_init__(self) -> None:
        queue_arguments(self.queue_type)  # refused here, not by the broker later

    def routing_key(self, host: str) -> str:
        """The routing key ``host`` publishes with (:func:`routing_key`)."""
        return routing_key(self.topic, host)

    def binding_key(self, host: str | None) -> str:
        """The binding key of ``host``'s events, or every host's (:func:`binding_key`)."""
        return binding_key(self.topic, host)

    def host_queue(self, host: str) -> str:
        """The durable queue of ``host``'s events (:func:`host_queue_name`)."""
        return host_queue_name(self.topic, host)

    @property
    def queue_arguments(self) -> dict[str, Any]:
        """The ``x-arguments`` every durable queue of the events is declared with."""
        return queue_arguments(self.queue_type)


def stream_arguments(max_age: str, max_bytes: int) -> dict[str, Any]:
    """Return the ``x-arguments`` of the history stream: a stream kept ``max_age``, ``max_bytes``.

    ``max_age`` is RabbitMQ's form (``7D``, ``12h``, ``30m``); whichever
    bound is reached first drops the oldest segments.
    """
    return {"x-queue-type": "stream", "x-max-age": max_age, "x-max-length-bytes": max_bytes}


#: The notification around a payload, as ``json.dumps`` would write its dict (strings quoted).
_NOTIFICATION = (
    '{"message_id": %s, "_unique_id": %s, "publisher_id": %s, "event_type": %s, '
    '"priority": "' + PRIORITY.upper() + '", "payload": %s, "timestamp": %s}'
)
#: The ``messagingv2`` envelope as ``json.dumps`` writes it, up to the opening quote of the
#: notification's JSON, held as a string (the decoder reads such a body's string directly).
_ENVELOPE_HEAD = b'{"oslo.version": "' + OSLO_VERSION.encode() + b'", "oslo.message": "'


def encode(event: WireEvent, signer: Signer | None = None) -> bytes:
    """Encode an event as a ``messagingv2`` notification body (UTF-8 JSON), signed by signer.

    The payload is written in its canonical form (keys sorted, compact), the
    very text a signature covers: signing costs one HMAC, not a second
    encoding; the ``signature`` object is appended to it.
    """
    text, occurred_at = canonical_text_and_time(event)
    if signer is not None:
        signature = signer.signature_text(text.encode("ascii"))
        text = f'{text[:-1]},"{SIGNATURE_FIELD}":{signature}}}'
    event_id = _quoted(event.event_id)
    notification = _NOTIFICATION % (
        event_id,
        # oslo.messaging listeners drop a repeated _unique_id themselves.
        event_id,
        _quoted(PUBLISHER_PREFIX + event.host),
        _quoted(event.event_type),
        text,
        # oslo.messaging's own format, str(datetime.utcnow()), of the payload's
        # time (``YYYY-MM-DDTHH:MM:SS.ffffffZ``).
        _quoted(occurred_at[:-1].replace("T", " ")),
    )
    return _ENVELOPE_HEAD[:-1] + _quoted(notification).encode("ascii") + b"}"


#: Every ``event_type`` of ours, and the kind of event it names.
_KINDS: dict[str, type[WireEvent]] = {
    **{INSTANCE_EVENT_PREFIX + t.value: LifecycleEvent for t in Transition},
    **{INSTANCE_EVENT_PREFIX + f.value: FaultEvent for f in Fault},
    **{HOST_EVENT_PREFIX + c.value: HostEvent for c in HostChange},
}


def event_class(event_type: str) -> type[WireEvent]:
    """The kind of event an ``event_type`` names; raise :class:`MalformedEvent` for none.

    ``hypervisor.instance.<transition>`` is a lifecycle event,
    ``hypervisor.instance.<fault>`` a fault event, ``hypervisor.host.<change>``
    a host event.
    """
    try:
        return _KINDS[event_type]
    except KeyError:
        raise MalformedEvent(f"event_type {event_type[:80]!r} is not one of ours") from None


def decode(
    body: bytes | str, verifier: Verifier | None = None, *, fresh: bool = True
) -> WireEvent:
    """Decode a notification body; raise :class:`MalformedEvent` if it is not one of ours.

    Accepts the ``messagingv2`` envelope and, for oslo's older ``messaging``
    driver, a bare notification. The ``event_type`` picks the kind of event
    (:func:`event_class`), and must agree with the payload (a signature does
    not cover the envelope). With a ``verifier``, the payload's signature
    is checked before any of its fields is read, then (unless ``fresh`` is
    False: replaying history) its freshness (:meth:`Verifier.verify`): the
    event returned is ``verified``; the
    verifier's :class:`~hypervisor_notifier.signing.Unverified` and
    :class:`~hypervisor_notifier.signing.Replayed` are MalformedEvents too.
    Never raises anything else.
    """
    event_type, payload = _notification(body)
    kind = event_class(event_type)
    if verifier is None:
        event: WireEvent = kind.from_payload(payload)
    else:
        event = verifier.verify(payload, fresh=fresh, kind=kind)
    if event_type != event.event_type:
        raise MalformedEvent(
            f"event_type {event_type!r} contradicts its payload ({event.event_type!r})"
        )
    return event


def _notification(body: bytes | str) -> tuple[str, object]:
    """Unwrap the envelope: the notification's event_type and (unchecked) payload."""
    # py-amqp hands over str bodies when a content encoding is set: count bytes.
    size = len(body.encode(errors="replace")) if isinstance(body, str) else len(body)
    if size > MAX_BODY_BYTES:
        raise MalformedEvent(f"body of {size} bytes exceeds {MAX_BODY_BYTES}")
    message = _as_encoded(body)
    if message is not None:
        return _event_type_and_payload(_json(message, "oslo.message"))
    outer = _json(body, "body")
    if isinstance(outer, dict) and "oslo.message" in outer:
        version = outer.get("oslo.version")
        if not isinstance(version, str) or version.split(".", 1)[0] != "2":
            raise MalformedEvent(f"oslo.version {version!r} is not 2.x")
        inner = _json(outer["oslo.message"], "oslo.message")
    else:
        inner = outer
    return _event_type_and_payload(inner)


def _event_type_and_payload(inner: object) -> tuple[str, object]:
    """The notification's event_type and (unchecked) payload; it must be an object."""
    if not isinstance(inner, dict):
        raise MalformedEvent("notification is not a JSON object")
    event_type = inner.get("event_type")
    if not isinstance(event_type, str):
        raise MalformedEvent(f"event_type {str(event_type)[:80]!r} is not a string")
    return event_type, inner.get("payload")


_scan_string = json.decoder.scanstring


def _as_encoded(body: bytes | str) -> str | None:
    """The inner JSON of an envelope exactly as :func:`encode` writes it; None for any other body.

    Such a body is that JSON object and nothing else: its ``oslo.message``
    read as a JSON string, without building the outer object, is what
    decoding the whole body would give (the caller decodes any other body so).
    """
    if type(body) is not bytes or not body.startswith(_ENVELOPE_HEAD) or body[-2:] != b'"}':
        return None
    try:
        # As _json decodes bytes starting with '{"': UTF-8.
        text = body.decode("utf-8", "surrogatepass")
        message, end = _scan_string(text, len(_ENVELOPE_HEAD))
    except ValueError:  # UnicodeDecodeError too: the whole body's decoding names the fault
        return None
    # The string's closing quote is the body's last but one character: nothing else in it.
    return message if end == len(text) - 1 else None


#: One decoder for every message: ``json.loads`` would check its arguments each time.
_DECODER = json.JSONDecoder()


def _json(text: object, what: str) -> Any:
    """``json.loads(text)``, quicker for what a publisher sends: an object, nothing around it."""
    try:
        if isinstance(text, (bytes, bytearray)):
            # As json.loads decodes bytes: UTF-8 unless a BOM or NULs say otherwise
            # (a "{" not followed by a NUL is UTF-8).
            utf8 = text[:1] == b"{" and text[1:2] != b"\0"
            text = text.decode("utf-8" if utf8 else json.detect_encoding(text), "surrogatepass")
        elif not isinstance(text, str):
            return json.loads(text)  # type: ignore[arg-type]  # its TypeError names the type
        if text[:1] == "{":
            value, end = _DECODER.raw_decode(text)
            if end == len(text):
                return value
        # Whitespace around it, trailing data, not an object: as json.loads does.
        return _DECODER.decode(text)
    except (ValueError, TypeError, RecursionError) as exc:
        raise MalformedEvent(f"{what} is not JSON: {exc}") from None
