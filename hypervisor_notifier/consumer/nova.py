"""nova-compute adapter: this host's bus events in place of the driver's own.

nova's ComputeManager registers ``handle_events`` with its virt driver
(``driver.register_event_listener``, from ``init_virt_events``); the driver
calls it with ``nova.virt.event.LifecycleEvent`` objects, and
``handle_lifecycle_event`` syncs the instance's power state at once instead
of at the next ``_sync_power_states`` poll (every 10 minutes by default).

:func:`install` makes that registration also start a :class:`NovaEventSource`:
a :class:`~hypervisor_notifier.consumer.Subscriber` of this host's durable
queue (``CONF.host``) whose events, after the :class:`StoppedHold` policy,
reach the same callback. ``[hypervisor_notifier] source`` says which source
nova listens to, so no event is handled twice:

- ``bus`` (default): events from the bus; the driver's own lifecycle events
  are discarded (its other events, e.g. libvirt device events, pass).
- ``driver``: nova's in-tree events; the adapter stays off.

nova loads ``compute_driver`` only as ``nova.virt.<value>``, so the adapter
cannot be a driver of its own; the ``hypervisor-notifier-nova-compute``
command runs nova's own ``nova-compute`` main with :func:`install` applied.
It touches only nova's virt driver contract (``register_event_listener``,
``nova.virt.event``), stable across releases.

Threads: in nova's default threading mode the callback is called from the
subscriber's (and the hold's) native threads, as nova's libvirt driver does.
In the deprecated eventlet mode ``threading`` is monkey patched before this
runs, so the same threads are green threads, as nova requires there.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable
from typing import Any

from oslo_config import cfg

from hypervisor_notifier.conf import nova as nova_conf
from hypervisor_notifier.consumer import nova_settings
from hypervisor_notifier.consumer.dispatcher import SubscriberStats
from hypervisor_notifier.consumer.stopped_hold import StoppedHold
from hypervisor_notifier.consumer.subscriber import Subscriber
from hypervisor_notifier.events import LifecycleEvent, Transition
from hypervisor_notifier.signing import Verifier

LOG = logging.getLogger(__name__)

#: The nova.conf group of the adapter (its options: :mod:`hypervisor_notifier.conf.nova`).
GROUP = nova_conf.GROUP


def nova_transition(transition: Transition) -> int | None:
    """Nova's ``EVENT_LIFECYCLE_*`` for ``transition``; None when nova has no name for it.

    None for ``crashed`` too: nova's libvirt driver ignores libvirt's CRASHED,
    and its periodic poll handles a guest that stays crashed (the STOPPED that
    follows a crash, when the guest is destroyed, is handed on).
    """
    from nova.virt import event as virtevent

    return {
        Transition.STARTED: virtevent.EVENT_LIFECYCLE_STARTED,
        Transition.STOPPED: virtevent.EVENT_LIFECYCLE_STOPPED,
        Transition.PAUSED: virtevent.EVENT_LIFECYCLE_PAUSED,
        Transition.RESUMED: virtevent.EVENT_LIFECYCLE_RESUMED,
        Transition.SUSPENDED: virtevent.EVENT_LIFECYCLE_SUSPENDED,
        Transition.POSTCOPY_STARTED: virtevent.EVENT_LIFECYCLE_POSTCOPY_STARTED,
        Transition.MIGRATION_COMPLETED: virtevent.EVENT_LIFECYCLE_MIGRATION_COMPLETED,
    }.get(transition)


def to_nova_event(event: LifecycleEvent) -> Any | None:
    """``event`` as a ``nova.virt.event.LifecycleEvent``; None when nova has no name for it."""
    from nova.virt import event as virtevent

    transition = nova_transition(event.transition)
    if transition is None:
        return None
    return virtevent.LifecycleEvent(
        event.instance_uuid, transition, timestamp=event.occurred_at.timestamp()
    )


@dataclasses.dataclass
class AdapterStats:
    """What the adapter did with the events it received.

    Arguments:
        subscriber: The stats of the adapter's subscriber, which refuses what
            must never reach nova (read through ``other_host`` and ``unverified``).

    """

    subscriber: SubscriberStats
    handed_to_nova: int = 0
    #: Events nova has no transition for (shutting_down, rebooted, crashed).
    no_nova_transition: int = 0
    #: The virt driver's own lifecycle events, discarded while the source is the bus.
    driver_events_discarded: int = 0

    @property
    def other_host(self) -> int:
        """Events naming another host than this nova-compute's (refused, never handed on)."""
        return self.subscriber.other_host

    @property
    def unverified(self) -> int:
        """Events not verified while a key is set (refused, never handed on)."""
        return self.subscriber.unverified


class NovaEventSource:
    """Hand one host's bus events to nova's event callback.

    Delivery semantics: those of :class:`Subscriber` (each event once, each
    instance's in order, acked once handled or held; another host's event,
    an unverified one while a key is set and, with a state file, a replay
    after a restart are refused), then :class:`StoppedHold`. If the callback
    raises, the event is redelivered (nova's own driver path would drop it).

    Arguments:
        callback: nova's registered callback (``ComputeManager.handle_events``).
        host: This nova-compute's ``CONF.host``; no other host's event is handed on.
        stopped_hold: See :class:`StoppedHold`'s ``hold``.
        subscriber_options: The :class:`Subscriber`'s arguments: ``transport_url``
            (required), ``exchange``, ``topic``, ``queue_type``, ``verifier`` (when
            set, only events it verified reach nova), the TLS files, ``force_tls``,
            ``heartbeat`` (default nova's), ``state_file`` (where the delivered
            events are remembered across restarts).

    """

    def __init__(
        self,
        callback: Callable[[Any], None],
        *,
        host: str,
        stopped_hold: float = 15.0,
        **subscriber_options: Any,
    ) -> None:
        self.callback = callback
        self.host = host
        #: Where each setting came from (set by :meth:`from_conf`), for the start line.
        self.sources = ""
        self.hold = StoppedHold(self._hand_to_nova, stopped_hold)
        subscriber_options.setdefault("heartbeat", nova_settings.DEFAULT_HEARTBEAT)
        self.subscriber = Subscriber(callback=self.hold.offer, host=host, **subscriber_options)
        self.verifier = self.subscriber.verifier
        self.stats = AdapterStats(self.subscriber.stats)

    @classmethod
    def from_conf(cls, conf: cfg.ConfigOpts, callback: Callable[[Any], None]) -> NovaEventSource:
        """Build it from nova's configuration (oslo.messaging's groups as fallbacks).

        Reads ``[hypervisor_notifier]``, ``host``, ``state_path`` and, where
        the adapter's options are unset, oslo.messaging's groups
        (:mod:`~hypervisor_notifier.consumer.nova_settings`).
        """
        nova_settings.register_oslo_messaging_opts(conf)
        group = conf[nova_conf.GROUP]
        try:
            settings = nova_settings.resolve(conf)
            source = cls(
                callback,
                host=conf.host,
                stopped_hold=group.stopped_hold,
                exchange=group.exchange,
                topic=group.topic,
                verifier=Verifier.from_conf(group),
                **settings.subscriber_options(),
            )
        except ValueError as exc:
            # Every message names its option or file, never a password.
            text = str(exc)
            raise ValueError(
                text if text.startswith("[") else f"[{nova_conf.GROUP}] {text}"
            ) from None
        source.sources = settings.describe()
        return source

    def start(self) -> None:
        """Start consuming and the hold's timer."""
        self.hold.start()
        self.subscriber.start()

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Wait until the host's queue is consumed; return whether it is."""
        return self.subscriber.wait_ready(timeout)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop consuming; events still held are dropped (logged).

        Arguments:
            timeout: Seconds to wait for the subscriber's thread (0: do not
                wait; its unacked messages are requeued when it ends).

        """
        self.subscriber.stop(timeout)
        for event in self.hold.stop():
            LOG.info("dropped the held stopped of %s at stop", event.instance_uuid)

    def _hand_to_nova(self, event: LifecycleEvent) -> None:
        nova_event = to_nova_event(event)
        if nova_event is None:
            self.stats.no_nova_transition += 1
            return
        self.callback(nova_event)
        self.stats.handed_to_nova += 1


def discarding_lifecycle_events(
    callback: Callable[[Any], None], stats: AdapterStats
) -> Callable[[Any], None]:
    """Wrap nova's callback for the driver: drop its lifecycle events, pass the rest."""
    from nova.virt import event as virtevent

    def from_driver(event: Any) -> None:
        if isinstance(event, virtevent.LifecycleEvent):
            stats.driver_events_discarded += 1
            LOG.debug("discarded the driver's %s: nova listens to the bus", event)
            return
        callback(event)

    return from_driver


_installed_lock = threading.Lock()
#: The adapter of each driver (one per nova-compute process), by id(driver).
SOURCES: dict[int, NovaEventSource] = {}


def install(conf: cfg.ConfigOpts | None = None) -> None:
    """Make nova's event-listener registration use ``[hypervisor_notifier] source``.

    Registers the options on nova's configuration and wraps
    ``ComputeDriver.register_event_listener``; idempotent. Call it before
    nova-compute starts its manager, after nova chose its concurrency mode.

    Arguments:
        conf: nova's configuration object (default: ``nova.conf.CONF``).

    """
    from nova.virt import driver as virt_driver

    if conf is None:
        import nova.conf

        conf = nova.conf.CONF
    with _installed_lock:
        conf.register_opts(nova_conf.all_opts, group=nova_conf.GROUP)
        original = virt_driver.ComputeDriver.register_event_listener
        if getattr(original, "hypervisor_notifier_original", None) is not None:
            return
        nova_config = conf

        def register_event_listener(driver: Any, callback: Any) -> None:
            _register(driver, callback, nova_config, original)

        register_event_listener.hypervisor_notifier_original = original  # type: ignore[attr-defined]
        virt_driver.ComputeDriver.register_event_listener = register_event_listener


def _register(driver: Any, callback: Any, conf: cfg.ConfigOpts, original: Any) -> None:
    from nova import utils

    previous = SOURCES.pop(id(driver), None)
    if previous is not None:
        # nova's cleanup_host shuts its thread pools down right after this:
        # do not hold nova-compute's shutdown up.
        previous.stop(timeout=0)
    name = type(driver).__name__
    if callback is None or conf[nova_conf.GROUP].source == "driver":
        if callback is not None:
            LOG.info(
                "nova lifecycle events: from the %s driver (source=driver); "
                "the bus adapter is off",
                name,
            )
        original(driver, callback)
        return
    source = NovaEventSource.from_conf(conf, callback)
    SOURCES[id(driver)] = source
    original(driver, discarding_lifecycle_events(callback, source.stats))
    mode = "threading" if utils.concurrency_mode_threading() else "eventlet"
    LOG.info(
        "nova lifecycle events: from the bus (source=bus): host %r, exchange %r, "
        "queue %r on %s, %s, stopped hold %.1f s, %s mode; the %s driver's own "
        "lifecycle events are discarded; %s",
        source.host,
        source.subscriber.topology.exchange,
        source.subscriber.queue_name,
        source.subscriber.url.masked(),
        f"signed events only (key ids {', '.join(source.verifier.key_ids)})"
        if source.verifier is not None
        else "unsigned events accepted (no [hypervisor_notifier] key)",
        source.hold.hold,
        mode,
        name,
        source.sources,
    )
    source.start()
