"""The driver process of ``latency.py``: calls libvirt, one call per request.

Usage: ``python driver.py URI DOMAIN``. Opens URI read-write and, for each
line (an index) read on stdin, suspends the domain if it runs or resumes it
if it is paused, taking ``time.monotonic()`` just before the call. At the
end of stdin, writes ``[[index, "suspend"|"resume", started], ...]`` as JSON
on stdout. A separate script rather than a multiprocessing target: it starts
fast and imports neither oslo.messaging nor kombu.
"""

from __future__ import annotations

import json
import sys
import time

import libvirt


def main(argv: list[str]) -> int:
    uri, domain = argv
    conn = libvirt.open(uri)
    try:
        dom = conn.lookupByName(domain)
        paused = dom.state()[0] == libvirt.VIR_DOMAIN_PAUSED
        calls = []
        for line in sys.stdin:
            call = dom.resume if paused else dom.suspend
            started = time.monotonic()
            call()
            calls.append((int(line), call.__name__, started))
            paused = not paused
    finally:
        conn.close()
    json.dump(calls, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
