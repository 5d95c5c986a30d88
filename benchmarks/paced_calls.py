"""Paced libvirt calls in another process, matched with the events a path delivered.

Not a benchmark: ``latency.py`` uses it. A driver child process
(``driver.py``) alternates ``dom.suspend()`` and ``dom.resume()``; it stamps
the time just before each call and makes the next call only once the
previous event arrived, so events never queue behind each other (latency,
not throughput). The n-th event of the domain is matched with the n-th
call, and its transition checked against the call.
"""

from __future__ import annotations

import dataclasses
import json
import queue
import subprocess
import sys
from pathlib import Path
from typing import Any

from harness import STOP_TIMEOUT

DRIVER = Path(__file__).with_name("driver.py")
WARMUP = 20
EVENT_TIMEOUT = 5.0
MAX_MISSING = 5
#: The transition each driver call must cause.
TRANSITION_OF_CALL = {"suspend": "paused", "resume": "resumed"}


class Inbox:
    """Receive times and transitions of the bench domain's events, in arrival order."""

    def __init__(self, domain: str) -> None:
        self.domain = domain
        self._events: queue.SimpleQueue[tuple[float, str]] = queue.SimpleQueue()

    def record(self, received_at: float, domain: str, transition: str) -> None:
        """Called by a path's callback; other domains' events are ignored."""
        if domain == self.domain:
            self._events.put((received_at, transition))

    def get(self, timeout: float) -> tuple[float, str] | None:
        """The next event, or None if none arrives within ``timeout`` seconds."""
        try:
            return self._events.get(timeout=timeout)
        except queue.Empty:
            return None


@dataclasses.dataclass
class Run:
    """What one path measured."""

    latencies_ms: list[float]
    mismatched: int
    missing: int


def measure(inbox: Inbox, uri: str, domain: str, count: int) -> Run:
    """Make ``WARMUP + count`` paced calls in a driver process; match them with the events."""
    argv = [sys.executable, str(DRIVER), uri, domain]
    driver = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert driver.stdin is not None
    try:
        received: list[tuple[float, str] | None] = []
        for index in range(WARMUP + count):
            # The next call only once the previous event arrived: no queueing.
            driver.stdin.write(f"{index}\n")
            driver.stdin.flush()
            received.append(inbox.get(EVENT_TIMEOUT))
            _check_progress(received, driver)
        calls, _ = driver.communicate(timeout=STOP_TIMEOUT)
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
    run = match(json.loads(calls)[WARMUP:], received[WARMUP:])
    if not run.latencies_ms:
        raise RuntimeError(f"no event matched its call: {run}")
    return run


def _check_progress(received: list[Any], driver: subprocess.Popen[str]) -> None:
    """Give up early rather than wait EVENT_TIMEOUT for every call."""
    if received[-1] is not None:
        return
    if driver.poll() is not None:
        raise RuntimeError(f"the driver process died (exit code {driver.returncode})")
    if received.count(None) > MAX_MISSING:
        raise RuntimeError(f"more than {MAX_MISSING} events missing: is the path forwarding?")


def match(calls: list[list[Any]], received: list[tuple[float, str] | None]) -> Run:
    """Pair the n-th call with the n-th event; check each event's transition."""
    run = Run([], 0, 0)
    for (_index, call, started), event in zip(calls, received, strict=True):
        if event is None:
            run.missing += 1
            continue
        received_at, transition = event
        if transition != TRANSITION_OF_CALL[call]:
            run.mismatched += 1
            continue
        run.latencies_ms.append((received_at - started) * 1000)
    return run


def merge(earlier: Run | None, later: Run) -> Run:
    """One path's rounds, as one run."""
    if earlier is None:
        return later
    return Run(
        earlier.latencies_ms + later.latencies_ms,
        earlier.mismatched + later.mismatched,
        earlier.missing + later.missing,
    )
