"""``hypervisor-notifier --config-file FILE``: run the service until SIGTERM."""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

from oslo_config import cfg

from hypervisor_notifier import conf as config
from hypervisor_notifier import logs, version
from hypervisor_notifier.backends import MissingBinding, UnknownBackend, load_backend
from hypervisor_notifier.cmd import print_error
from hypervisor_notifier.cmd.stopping import StopRequest, stop_signals_to_main_thread
from hypervisor_notifier.conf import signing as signing_conf
from hypervisor_notifier.notifier import broker, startup_objects, systemd
from hypervisor_notifier.notifier.health import HealthServer
from hypervisor_notifier.notifier.outbox_schema import OutboxRefused
from hypervisor_notifier.notifier.outbox_sqlite import SQLiteOutbox
from hypervisor_notifier.notifier.service import Service
from hypervisor_notifier.notifier.watchdog import Watchdog
from hypervisor_notifier.signing import Signer

PROG = "hypervisor-notifier"
LOG = logging.getLogger(__name__)


def _signer(conf: cfg.ConfigOpts) -> Signer | None:
    """The ``[signing]`` key's signer (None without a key)."""
    try:
        return Signer.from_conf(conf[signing_conf.GROUP])
    except ValueError as exc:
        raise config.ConfigError(f"{config.where(conf, signing_conf.GROUP)} {exc}") from None


def _setup_logging(conf: cfg.ConfigOpts) -> None:
    """oslo.log from ``conf``; a destination that cannot be used is a configuration error."""
    try:
        logs.setup(conf, PROG)
    except ValueError as exc:
        raise config.ConfigError(str(exc)) from None


def main(argv: Sequence[str] | None = None) -> int:
    """Run the service; return 0 once stopped with no event lost."""
    stop = StopRequest()
    # Every thread, the outbox's included, is started with the stop signals
    # blocked: SIGTERM must reach the main thread, which alone handles it.
    with stop_signals_to_main_thread(stop.request):
        try:
            conf = config.load(
                sys.argv[1:] if argv is None else argv, prog=PROG, version=version()
            )
            _setup_logging(conf)
            backend = load_backend(conf)
            signer = _signer(conf)
            outbox = SQLiteOutbox(
                conf.outbox.path, conf.outbox.max_events, conf.outbox.synchronous, signer=signer
            )
            service = Service.from_conf(conf, backend, outbox)
            health = None
            if conf.health.enabled:
                health = HealthServer(
                    service, conf.health.listen, conf.health.port, conf.health.max_event_age
                )
        except (config.ConfigError, UnknownBackend, MissingBinding, OutboxRefused) as exc:
            return print_error(PROG, exc)
        except OSError as exc:  # the health port is taken or not ours to bind
            where = f"[health] {conf.health.listen}:{conf.health.port}"
            return print_error(PROG, OSError(f"{where}: {exc.strerror}"))
        # Once the configuration is known good: a bad one is one line of error.
        if signer is None:
            LOG.warning("events are not signed: [%s] key is not set", signing_conf.GROUP)
        else:
            LOG.info("signing events with key %r", signer.key_id)
        LOG.info("broker: %s", broker.from_conf(conf).sources)
        interval = systemd.watchdog_interval()
        watchdog = Watchdog(service, interval) if interval else None
        stop.forward_to(service.request_stop)
        LOG.info("%d start-up objects frozen: the garbage collector no longer walks them",
                 startup_objects.freeze())  # fmt: skip
        if health is not None:
            health.start()
        service.start()
    systemd.notify("READY=1")
    if watchdog is not None:
        LOG.info("systemd watchdog: pinging every %.1f s while the service is alive", interval)
        watchdog.run(service.wait)
    else:
        service.wait()
    systemd.notify("STOPPING=1")
    left = service.stop()
    if health is not None:
        health.stop()
    outbox.close()
    # Unconfirmed events in a durable outbox are published by the next start.
    return 1 if left and not outbox.durable else 0


if __name__ == "__main__":
    sys.exit(main())
