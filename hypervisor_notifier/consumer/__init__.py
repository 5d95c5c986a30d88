"""The consumer library: receive a host's (or every host's) lifecycle events.

Imports neither hypervisor bindings nor the publisher, so nova-compute and
any other subscriber can use it on any host::

    from hypervisor_notifier.consumer import Subscriber

    def on_event(event):
        print(event.instance_uuid, event.transition, event.power_state)

    subscriber = Subscriber("rabbit://guest:guest@127.0.0.1:5672/", on_event, host="compute1")
    subscriber.start()

With ``verifier=hypervisor_notifier.signing.Verifier(...)`` it hands over only
events signed with the deployment's key (``event.verified``); with
``rabbits://`` and ``ssl_ca_file=...`` it connects with TLS; with
``state_file=...`` it still refuses a replayed or stale event after a restart
(see doc/source/security.rst). A host's subscriber refuses events naming
another host. A process consuming many queues (a fleet of simulated hosts)
shares one connection and one thread among its Subscribers with
:class:`SubscriberGroup` (a channel each).
"""

from hypervisor_notifier.consumer.group import SubscriberGroup
from hypervisor_notifier.consumer.subscriber import Subscriber, SubscriberStats
from hypervisor_notifier.events import LifecycleEvent, PowerState, Transition

__all__ = [
    "LifecycleEvent",
    "PowerState",
    "Subscriber",
    "SubscriberGroup",
    "SubscriberStats",
    "Transition",
]
