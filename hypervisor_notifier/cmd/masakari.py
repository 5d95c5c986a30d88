"""``hypervisor-notifier-masakari --config-file FILE``: guest failures on the bus to masakari."""

from __future__ import annotations

import sys
import threading
from collections.abc import Sequence

from oslo_config import cfg

from hypervisor_notifier import logs
from hypervisor_notifier.cmd.stopping import stop_signals_to_main_thread
from hypervisor_notifier.conf import default as default_conf
from hypervisor_notifier.conf import masakari as masakari_conf
from hypervisor_notifier.consumer.masakari import MasakariConsumer
from hypervisor_notifier.transport_url import mask_secrets

PROG = "hypervisor-notifier-masakari"


def main(argv: Sequence[str] | None = None) -> int:
    """Consume until SIGTERM; 2 for a bad configuration."""
    conf = cfg.ConfigOpts()
    conf.register_opts(default_conf.opts)
    masakari_conf.register_opts(conf)
    try:
        conf(list(sys.argv[1:] if argv is None else argv), project="hypervisor-notifier",
             prog=PROG)  # fmt: skip
        consumer = MasakariConsumer.from_conf(conf)
    except (cfg.Error, ValueError) as exc:
        print(f"{PROG}: error: {mask_secrets(str(exc).strip())}", file=sys.stderr)
        return 2
    logs.setup(debug=conf.debug, log_file=conf.log_file)
    done = threading.Event()
    with stop_signals_to_main_thread(done.set):
        consumer.start()
    done.wait()
    consumer.stop()
    stats = consumer.stats
    print(f"{PROG}: stopped; notified {stats.notified}, duplicates {stats.duplicates}, "
          f"refused {stats.refused}, ignored {stats.ignored}", file=sys.stderr)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
