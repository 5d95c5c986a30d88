"""``hypervisor-notifier-masakari --config-file FILE``: guest failures on the bus to masakari."""

from __future__ import annotations

import sys
import threading
from collections.abc import Sequence

from hypervisor_notifier import conf as config
from hypervisor_notifier import logs, version
from hypervisor_notifier.cmd import print_error
from hypervisor_notifier.cmd.stopping import stop_signals_to_main_thread
from hypervisor_notifier.conf import masakari as masakari_conf
from hypervisor_notifier.consumer.masakari import MasakariConsumer, Outcome
from hypervisor_notifier.transport_url import mask_secrets

PROG = "hypervisor-notifier-masakari"


def main(argv: Sequence[str] | None = None) -> int:
    """Consume until SIGTERM; 2 for a bad configuration."""
    try:
        conf = config.load(
            sys.argv[1:] if argv is None else argv,
            prog=PROG,
            version=version(),
            register=masakari_conf.register_opts,
            options=masakari_conf.own_opts,
        )
        logs.setup(conf, PROG)
        consumer = MasakariConsumer.from_conf(conf)
    except (config.ConfigError, ValueError) as exc:
        return print_error(PROG, ValueError(mask_secrets(str(exc))))
    done = threading.Event()
    with stop_signals_to_main_thread(done.set):
        consumer.start()
    done.wait()
    consumer.stop()
    counts = ", ".join(f"{outcome.value} {consumer.stats[outcome]}" for outcome in Outcome)
    print(f"{PROG}: stopped; {counts}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
