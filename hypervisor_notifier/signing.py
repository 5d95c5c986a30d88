"""Signed events: HMAC-SHA256 over a canonical payload, with key ids and replay protection.

A forged ``stopped`` event could make a consumer (nova) stop or delete a
running guest, so a consumer that holds the key acts only on events signed
with it. The signature travels in the payload, as an extra field a decoder
without a key ignores (schema 1.1)::

    "signature": {"key_id": "2026-11", "alg": "hmac-sha256", "value": "<64 hex digits>"}

``value`` is HMAC-SHA256, under the key named by ``key_id``, of the
canonical encoding of every *other* payload field: JSON with sorted keys,
no whitespace, ASCII only (``json.dumps(sort_keys=True,
separators=(",", ":"), ensure_ascii=True)``), UTF-8. Fields a later minor
version adds are covered too, since the consumer hashes what it received.

Keys rotate without a flag day: a :class:`Verifier` accepts the current
and the previous key, each by its id; publishers switch to the new key
once every consumer knows it.

Replay protection (:class:`Verifier`): an event whose ``occurred_at`` is
older than ``max_age`` or further in the future than ``max_clock_skew`` is
refused, and so is an event_id delivered before within that window (the
ids are remembered exactly as long as an event could still pass the
window check).

This module imports neither oslo.config nor a broker client: the consumer
library and the nova adapter use it as it is.
"""

from __future__ import annotations

import collections
import datetime
import hashlib
import hmac
import json
import os
import stat
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from hypervisor_notifier.events import (
    LifecycleEvent,
    MalformedEvent,
    Stamp,
    StampedEvent,
    payload_object,
    utcnow,
)

ALGORITHM = "hmac-sha256"
SIGNATURE_FIELD = "signature"
#: Shorter keys are refused: HMAC-SHA256 wants at least 32 bytes of entropy.
MIN_KEY_BYTES = 32
#: Default window, seconds: an event older than this is refused as a possible
#: replay. It must cover how long an event may wait for delivery (an outbox
#: during a broker outage, a queue while its consumer is stopped).
DEFAULT_MAX_AGE = 3600.0
DEFAULT_MAX_CLOCK_SKEW = 60.0


class Unverified(MalformedEvent):
    """An event without a valid signature by an accepted key; the text says why (no secret)."""


class Replayed(Unverified):
    """A validly signed event that was delivered before, or is outside the time window."""


#: The canonical encoder, made once (``json.dumps`` with options makes one per call).
CANONICAL_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def canonical(payload: Mapping[str, Any]) -> bytes:
    """Return the bytes that are signed: every field but ``signature``, canonical JSON.

    Raises:
        Unverified: The payload cannot be encoded (e.g. too deeply nested).

    """
    unsigned = payload
    if SIGNATURE_FIELD in payload:
        unsigned = dict(payload)  # a copy without it (C's copy, not a comprehension)
        del unsigned[SIGNATURE_FIELD]
    try:
        text = CANONICAL_ENCODER.encode(unsigned)
    except (TypeError, ValueError, RecursionError) as exc:
        raise Unverified(f"payload cannot be encoded canonically: {type(exc).__name__}") from None
    return text.encode("ascii")


class _Key:
    """One HMAC key, its keyed hash state prepared once (copying it is cheaper than a new HMAC)."""

    def __init__(self, key_id: str, secret: bytes) -> None:
        if not key_id:
            raise ValueError("a signing key needs a non-empty key id")
        if len(secret) < MIN_KEY_BYTES:
            raise ValueError(
                f"signing key {key_id!r} is {len(secret)} bytes long; at least "
                f"{MIN_KEY_BYTES} are needed (e.g. 'openssl rand -hex 32')"
            )
        self.key_id = key_id
        self._hmac = hmac.new(secret, digestmod=hashlib.sha256)

    def __repr__(self) -> str:
        return f"<signing key {self.key_id!r}>"  # never the secret

    def digest(self, data: bytes) -> str:
        mac = self._hmac.copy()
        mac.update(data)
        return mac.hexdigest()


def read_secret(value: str | None, path: str | None, what: str) -> bytes | None:
    """Return a key given inline (``value``) or in a file (``path``, stripped); None if neither.

    Fails closed: a key that is set must be usable. An empty key (``key =``
    with nothing after it, an empty file) is an error, not "unsigned"; so is
    a key file that group or others may read or write (as ssh refuses such a
    private key). Shorter keys than :data:`MIN_KEY_BYTES` are refused when
    the key is used (:class:`Signer`, :class:`Verifier`).

    Arguments:
        value: The inline key option's value (None: unset).
        path: The key file option's value (None or empty: unset).
        what: The inline option's name (``key``); the file's is ``<what>_file``.

    Raises:
        ValueError: Both are given, the key is empty, or the file cannot be
            read or is not private (the text names the option, the file and
            its mode, never the key).

    """
    if value is not None and path:
        raise ValueError(f"{what} and {what}_file are both set; set one")
    if path:
        secret = _read_key_file(path, f"{what}_file")
        if not secret:
            raise ValueError(f"{what}_file {path!r} is empty: a key is needed (or no {what}_file)")
        return secret
    if value is not None and not value.strip():
        raise ValueError(f"{what} is set but empty: a key is needed (or no {what} line)")
    return value.encode() if value is not None else None


def _read_key_file(path: str, option: str) -> bytes:
    """The stripped content of a key file that only its owner may access."""
    try:
        # Checked on the open file: what is read is what was checked.
        descriptor = os.open(path, os.O_RDONLY | os.O_NOCTTY)
    except OSError as exc:
        raise ValueError(f"{option} {path!r}: {exc.strerror or exc}") from None
    try:
        mode = os.fstat(descriptor).st_mode
        if not stat.S_ISREG(mode):
            raise ValueError(f"{option} {path!r} is not a regular file")
        if mode & 0o077:
            raise ValueError(
                f"{option} {path!r} has mode {stat.S_IMODE(mode):04o}: group or others may "
                "access it; make it its owner's only (chmod 600), as ssh requires of a private key"
            )
        chunks = []
        while chunk := os.read(descriptor, 65536):
            chunks.append(chunk)
        return b"".join(chunks).strip()
    except OSError as exc:
        raise ValueError(f"{option} {path!r}: {exc.strerror or exc}") from None
    finally:
        os.close(descriptor)


class Signer:
    """Sign payloads with one key.

    Arguments:
        key_id: The key's name, carried in each signature so consumers pick the key.
        key: The secret (at least 32 bytes).

    """

    def __init__(self, key_id: str, key: bytes) -> None:
        self._key = _Key(key_id, key)
        # Canonical: keys sorted (alg, key_id, value); the digest is hex, nothing to escape.
        key_id_json = json.encoder.encode_basestring_ascii(key_id).replace("%", "%%")
        self._signature_template = f'{{"alg":"{ALGORITHM}","key_id":{key_id_json},"value":"%s"}}'

    @property
    def key_id(self) -> str:
        """The id carried in every signature."""
        return self._key.key_id

    @classmethod
    def from_conf(cls, group: Any) -> Signer | None:
        """Build from a ``conf/signing.py`` option group's values; None when no key is set.

        Arguments:
            group: The group's values (``conf[GROUP]``), in any oslo.config group.

        Raises:
            ValueError: The options are inconsistent (the text names which).

        """
        key = read_secret(group.key, group.key_file, "key")
        return None if key is None else cls(group.key_id, key)

    def sign(self, payload: dict[str, Any]) -> dict[str, Any]:
        """Return ``payload`` with its ``signature`` field (the dict is changed in place)."""
        payload[SIGNATURE_FIELD] = self.signature(canonical(payload))
        return payload

    def signature(self, text: bytes) -> dict[str, str]:
        """The ``signature`` field of a payload whose :func:`canonical` form is ``text``."""
        return {"key_id": self._key.key_id, "alg": ALGORITHM, "value": self._key.digest(text)}

    def signature_text(self, text: bytes) -> str:
        """:func:`canonical` of :meth:`signature`, written without the dict (its keys sorted)."""
        return self._signature_template % self._key.digest(text)


class Verifier:
    """Check signatures by the current or previous key, and refuse replays.

    Thread-safe. Only :meth:`remember`-ed event_ids are refused as seen: an
    event the application failed to handle is redelivered and must pass again.

    Arguments:
        keys: Accepted keys, ``{key_id: secret}`` (the current and previous one).
        max_age: Seconds after its ``occurred_at`` an event is refused.
        max_clock_skew: Seconds an ``occurred_at`` may lie in the future.
        clock: Returns the current aware UTC time (tests pass their own).

    """

    def __init__(
        self,
        keys: Mapping[str, bytes],
        *,
        max_age: float = DEFAULT_MAX_AGE,
        max_clock_skew: float = DEFAULT_MAX_CLOCK_SKEW,
        clock: Callable[[], datetime.datetime] = utcnow,
    ) -> None:
        if not keys:
            raise ValueError("a verifier needs at least one key")
        self._keys = {key_id: _Key(key_id, secret) for key_id, secret in keys.items()}
        self.max_age = datetime.timedelta(seconds=max_age)
        self.max_clock_skew = datetime.timedelta(seconds=max_clock_skew)
        self._clock = clock
        # event_id -> monotonic time after which it can no longer pass the window.
        self._seen: dict[str, float] = {}
        self._expiry: collections.deque[tuple[float, str]] = collections.deque()
        self._lock = threading.Lock()

    @property
    def key_ids(self) -> list[str]:
        """The ids of the accepted keys (safe to log)."""
        return list(self._keys)

    @classmethod
    def from_conf(cls, group: Any) -> Verifier | None:
        """As :meth:`Signer.from_conf`, and with the previous key (rotation) if one is set."""
        key = read_secret(group.key, group.key_file, "key")
        previous = read_secret(group.previous_key, group.previous_key_file, "previous_key")
        if key is None:
            if previous is not None:
                raise ValueError("previous_key is set but key is not")
            return None
        keys = {group.key_id: key}
        if previous is not None:
            if group.previous_key_id == group.key_id:
                raise ValueError(f"previous_key_id equals key_id ({group.key_id!r})")
            keys[group.previous_key_id] = previous
        return cls(keys, max_age=group.max_age, max_clock_skew=group.max_clock_skew)

    def check_signature(self, payload: Mapping[str, Any]) -> None:
        """Raise :class:`Unverified` unless ``payload`` is signed by an accepted key."""
        signature = payload.get(SIGNATURE_FIELD)
        if signature is None:
            raise Unverified("event is not signed")
        if not isinstance(signature, Mapping):
            raise Unverified(f"signature is a {type(signature).__name__}, not an object")
        alg, key_id, value = signature.get("alg"), signature.get("key_id"), signature.get("value")
        if alg != ALGORITHM:
            raise Unverified(f"signature algorithm {_short(alg)} is not {ALGORITHM}")
        key = self._keys.get(key_id) if isinstance(key_id, str) else None
        if key is None:
            raise Unverified(f"signed with unknown key {_short(key_id)}")
        # compare_digest refuses non-ASCII str (TypeError): no digest is that anyway.
        if not (isinstance(value, str) and value.isascii()) or not hmac.compare_digest(
            key.digest(canonical(payload)), value
        ):
            raise Unverified(f"signature by key {key_id!r} does not match the payload")

    def check_fresh(self, event: Stamp) -> None:
        """Raise :class:`Replayed` if ``event`` is outside the window or was delivered before."""
        now = self._clock()
        age = now - event.occurred_at
        if age > self.max_age:
            raise Replayed(f"event {event.event_id} is {age.total_seconds():.0f} s old")
        if -age > self.max_clock_skew:
            raise Replayed(
                f"event {event.event_id} occurred {-age.total_seconds():.0f} s in the future"
            )
        with self._lock:
            self._forget_expired()
            if event.event_id in self._seen:
                raise Replayed(f"event {event.event_id} was delivered before")

    def verify(
        self, payload: object, *, fresh: bool = True, kind: type[StampedEvent] = LifecycleEvent
    ) -> StampedEvent:
        """Check the signature, decode as ``kind``, check freshness; return it marked ``verified``.

        ``fresh=False`` skips the freshness check: for reading history, where
        an old event or one seen before is expected. ``kind`` is the event
        class the envelope's ``event_type`` names (``wire.event_class``).

        Raises:
            Unverified: Not signed by an accepted key.
            Replayed: Signed, but outside the window or delivered before.
            MalformedEvent: Not a JSON object, or signed but not a valid payload.

        """
        payload = payload_object(payload)
        self.check_signature(payload)
        event = kind.from_payload(payload, verified=True)
        if fresh:
            self.check_fresh(event)
        return event

    def remember(self, event: Stamp) -> None:
        """Record that ``event`` was delivered: the same event_id is refused from now on."""
        # Until it could no longer pass the window check anyway.
        expires_in = (event.occurred_at + self.max_age - self._clock()).total_seconds()
        expires = time.monotonic() + max(expires_in, 0.0)
        with self._lock:
            self._seen[event.event_id] = expires
            self._expiry.append((expires, event.event_id))

    def _forget_expired(self) -> None:
        now = time.monotonic()
        while self._expiry and self._expiry[0][0] <= now:
            expires, event_id = self._expiry.popleft()
            if self._seen.get(event_id) == expires:
                del self._seen[event_id]


def _short(value: object) -> str:
    """``repr`` of an untrusted value, cut short for a log line."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
