"""masakari consumer: guest failures on the bus become masakari VM notifications.

masakari's engine recovers a guest (``masakari.engine.instance_events``)
when a VM notification's payload says ``event: LIFECYCLE`` with
``vir_domain_event: STOPPED_FAILED``, or ``event: IO_ERROR`` with
``IO_ERROR_REPORT``, and ignores every other payload.
:func:`notification_for` turns this project's lifecycle events and guest
faults into exactly those payloads, and nothing else into a notification;
host events (``hypervisor.host.*``) never become one: a lost hypervisor
connection says nothing about the guests (doc/source/masakari.rst).

Delivery semantics (what masakari-monitors' instancemonitor does not give):

- **Acked only once masakari accepted.** A message leaves the queue when
  ``POST /notifications`` answered 2xx, or 409 (masakari already has that
  notification: a resend after a lost answer).
- **Never dropped for an outage.** While the API is unreachable or answers
  5xx (or a token problem), the same notification is retried with backoff,
  for as long as it takes; the event stays unacknowledged on the durable
  queue, so a restart of this consumer loses nothing either.
- **In order, once.** One notification at a time, in queue order (so per
  guest, lifecycle events and faults alike); the Subscriber drops
  duplicates (``event_id``) and stale events.
- **Refused for good, said loudly.** A 4xx other than 409 (the host is in
  no failover segment, a bad payload) will not change by retrying: the event
  is counted ``refused`` and logged at ERROR, and the consumer goes on.
"""

from __future__ import annotations

import collections
import enum
import logging
import threading
from typing import Any

from keystoneauth1 import exceptions as ks_exceptions
from keystoneauth1 import loading as ks_loading
from oslo_config import cfg

from hypervisor_notifier.backoff import Backoff
from hypervisor_notifier.conf import masakari as masakari_conf
from hypervisor_notifier.consumer.subscriber import Subscriber
from hypervisor_notifier.events import LifecycleEvent, Transition
from hypervisor_notifier.faults import Fault, FaultEvent
from hypervisor_notifier.host_events import HostChange, HostEvent
from hypervisor_notifier.signing import Verifier
from hypervisor_notifier.transport_url import describe_error

LOG = logging.getLogger(__name__)

#: What masakari's engine acts on: (``event``, ``vir_domain_event``) of a payload.
GUEST_FAILED = ("LIFECYCLE", "STOPPED_FAILED")
IO_ERROR_REPORTED = ("IO_ERROR", "IO_ERROR_REPORT")

#: The libvirt (reason, detail) of a lifecycle event that is a guest failure:
#: its process died (``FAILED``), it crashed and was destroyed (``on_crash =
#: destroy``, nova's setting) or kept crashed (``PANICKED``: not running either).
#: ``CRASHED``/``CRASHLOADED`` is absent: a crash kernel took over, the guest
#: recovers by itself.
FAILURE_EVENTS = {
    (Transition.STOPPED, "STOPPED", "FAILED"),
    (Transition.STOPPED, "STOPPED", "CRASHED"),
    (Transition.CRASHED, "CRASHED", "PANICKED"),
}
#: The watchdog actions that mean the hypervisor found the guest hung and reset
#: or powered it off: the failure masakari recovers. The stop that follows a
#: poweroff looks like any shutdown; this event is the only sign it was not one.
WATCHDOG_FAILURE_ACTIONS = {"reset", "poweroff"}
#: The I/O error action masakari's engine acts on: the error was reported to
#: the guest (a paused guest, or an ignored error, is not recovered by a restart).
IO_ERROR_ACTION = "report"
TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%f"

#: What the consumer receives from the Subscriber: a guest's lifecycle event or fault.
GuestEvent = LifecycleEvent | FaultEvent


def _action(event: FaultEvent) -> str:
    """The fault's action (``details``; libvirt's detail name if absent), lower case."""
    return str(event.details.get("action", event.detail)).lower()


def masakari_event(event: GuestEvent) -> tuple[str, str] | None:
    """The (``event``, ``vir_domain_event``) masakari's engine acts on for ``event``; None if none.

    Arguments:
        event: A lifecycle event or a guest fault from the bus.

    """
    if isinstance(event, LifecycleEvent):
        if event.resync:  # a state found, not a failure seen
            return None
        seen = (event.transition, event.reason, event.detail)
        return GUEST_FAILED if seen in FAILURE_EVENTS else None
    if event.fault is Fault.IO_ERROR and _action(event) == IO_ERROR_ACTION:
        return IO_ERROR_REPORTED
    if event.fault is Fault.WATCHDOG and _action(event) in WATCHDOG_FAILURE_ACTIONS:
        return GUEST_FAILED
    return None


def notification_for(event: GuestEvent) -> dict[str, Any] | None:
    """The masakari VM notification for ``event``; None if masakari should not act on it.

    The payload is the one masakari-monitors' instancemonitor sends for the
    same failure (``event``, ``instance_uuid``, ``vir_domain_event``), so
    masakari's engine, and its duplicate check, treat both alike.
    """
    kind = masakari_event(event)
    if kind is None:
        return None
    return {
        "type": "VM",
        "hostname": event.host,
        "generated_time": event.occurred_at.strftime(TIME_FORMAT),
        "payload": {
            "event": kind[0],
            "instance_uuid": event.instance_uuid,
            "vir_domain_event": kind[1],
        },
    }


class Refused(Exception):
    """masakari refused a notification for good (a 4xx other than 409)."""


class Stopped(Exception):
    """The consumer stops while a notification waits for masakari: it stays queued."""


class MasakariClient:
    """Hand notifications to masakari's API, retrying until it accepts them.

    Arguments:
        adapter: A keystoneauth1 Adapter for masakari (service type ``instance-ha``).
        retry_interval_max: Largest delay between two attempts.
        stopping: Set to give up waiting (the notification is not sent).

    """

    retry_initial = 0.5

    def __init__(
        self,
        adapter: Any,
        *,
        retry_interval_max: float = 60.0,
        stopping: threading.Event | None = None,
    ) -> None:
        self.adapter = adapter
        self.retry_interval_max = retry_interval_max
        self.stopping = stopping or threading.Event()
        #: Failed attempts so far (retried ones).
        self.retries = 0

    def send(self, notification: dict[str, Any]) -> str:
        """POST the notification; return ``accepted`` or ``duplicate``.

        Raises:
            Refused: masakari will never accept it.
            Stopped: :attr:`stopping` was set while retrying.

        """
        backoff = Backoff(initial=self.retry_initial, maximum=self.retry_interval_max)
        while True:
            problem = self._attempt(notification)
            if problem in ("accepted", "duplicate"):
                return problem
            self.retries += 1
            delay = backoff.next()
            LOG.warning("masakari did not take a notification (%s); retrying in %.1f s",
                        problem, delay)  # fmt: skip
            if self.stopping.wait(delay):
                raise Stopped(problem)

    def _attempt(self, notification: dict[str, Any]) -> str:
        """One POST: ``accepted``, ``duplicate``, or why to retry; Refused if never."""
        try:
            response = self.adapter.post(
                "/notifications", json={"notification": notification}, raise_exc=False
            )
        except (ks_exceptions.ConnectionError, ks_exceptions.http.HttpError) as exc:
            return f"API unreachable: {describe_error(exc)}"
        except ks_exceptions.ClientException as exc:
            # Catalog or token trouble: not this notification's fault, and not final.
            return f"keystone: {describe_error(exc)}"
        status = response.status_code
        if status < 300:
            return "accepted"
        if status == 409:
            return "duplicate"
        if status >= 500 or status in (401, 403, 408, 429):
            return f"HTTP {status}"
        raise Refused(f"HTTP {status}: {response.text[:200]}")


class Outcome(enum.Enum):
    """What became of an event the consumer received: one each, counted in its ``stats``.

    The value names the count (the command's last line, in this order).
    """

    #: Accepted by masakari (2xx).
    NOTIFIED = "notified"
    #: masakari already held an identical notification (409): a resend, or a panic's stop.
    DUPLICATE = "duplicates"
    #: Refused for good (a 4xx other than 409), logged at ERROR.
    REFUSED = "refused"
    #: No notification: lifecycle events and faults masakari does not act on, host events.
    IGNORED = "ignored"


class MasakariConsumer:
    """Every host's events from one durable queue, guest failures and faults to masakari.

    Arguments:
        client: Hands notifications to masakari.
        transport_url: The notifiers' broker(s).
        queue: The durable queue to read every host's events from.
        subscriber_options: Further :class:`Subscriber` arguments (exchange,
            topic, queue_type, verifier, TLS files).

    """

    def __init__(
        self, client: MasakariClient, transport_url: str, queue: str, **subscriber_options: Any
    ) -> None:
        self.client = client
        #: How many events had each :class:`Outcome` (none yet: 0).
        self.stats: collections.Counter[Outcome] = collections.Counter()
        # Retrying is the client's: the callback raises only when stopping.
        # Faults and host events are asked for: the Subscriber's default would ack
        # them unseen, and a fault can be the only sign of a failure.
        self.subscriber = Subscriber(
            transport_url,
            self._on_event,
            on_fault=self._on_event,
            on_host=self._on_host,
            queue=queue,
            **subscriber_options,
        )

    @classmethod
    def from_conf(cls, conf: cfg.ConfigOpts) -> MasakariConsumer:
        """Build from :mod:`hypervisor_notifier.conf.masakari`'s groups (registered)."""
        group = conf[masakari_conf.GROUP]
        auth = ks_loading.load_auth_from_conf_options(conf, masakari_conf.GROUP)
        session = ks_loading.load_session_from_conf_options(conf, masakari_conf.GROUP, auth=auth)
        adapter = ks_loading.load_adapter_from_conf_options(
            conf, masakari_conf.GROUP, session=session, auth=auth
        )
        client = MasakariClient(adapter, retry_interval_max=group.retry_interval_max)
        bus = conf[masakari_conf.BUS_GROUP]
        return cls(
            client,
            bus.transport_url,
            bus.queue,
            exchange=bus.exchange,
            topic=bus.topic,
            queue_type=bus.queue_type,
            verifier=Verifier.from_conf(bus),
            ssl_ca_file=bus.ssl_ca_file,
            ssl_cert_file=bus.ssl_cert_file,
            ssl_key_file=bus.ssl_key_file,
        )

    def start(self) -> None:
        """Consume in the subscriber's thread."""
        self.client.stopping.clear()
        self.subscriber.start()

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Whether the queue is consumed (within ``timeout`` seconds)."""
        return self.subscriber.wait_ready(timeout)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop; a notification still waiting for masakari stays on the queue."""
        self.client.stopping.set()
        self.subscriber.stop(timeout)

    def _on_host(self, event: HostEvent) -> None:
        # Unknown is not failed: masakari must not restart guests that may be running.
        self.stats[Outcome.IGNORED] += 1
        if event.change is HostChange.DISCONNECTED:
            LOG.info("%s lost its hypervisor connection (%s): its guests' state is unknown, "
                     "not failed; masakari is not notified", event.host, event.reason)  # fmt: skip

    def _on_event(self, event: GuestEvent) -> None:
        # Stopped (raised while masakari is retried) counts nothing: the event stays queued.
        self.stats[self._notify(event)] += 1

    def _notify(self, event: GuestEvent) -> Outcome:
        notification = notification_for(event)
        if notification is None:
            return Outcome.IGNORED
        try:
            answer = self.client.send(notification)
        except Refused as exc:
            LOG.error("masakari refused the notification for %s on %s (%s): not retried",
                      event.instance_uuid, event.host, exc)  # fmt: skip
            return Outcome.REFUSED
        LOG.info("masakari notified: %s on %s, %s (%s/%s): %s", event.instance_uuid, event.host,
                 event.event_type, event.reason, event.detail, answer)  # fmt: skip
        return Outcome.DUPLICATE if answer == "duplicate" else Outcome.NOTIFIED
