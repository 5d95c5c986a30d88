"""The chaos schedule: a seeded, replayable sequence of faults (pure).

The faults come in rounds; each round is every kind once, in a shuffled
order, so a short run still meets each kind. Everything random about a
fault (how long it lasts, its parameter, the calm after it) is drawn here,
from the seed alone: the same seed gives the same faults in the same order.
"""

from __future__ import annotations

import dataclasses
import os
import random
from collections.abc import Iterator

KINDS = (
    "service_kill",  # SIGKILL of the service, started again after ``hold``
    "stop_app",  # rabbitmqctl stop_app, start_app after ``hold``
    "broker_kill",  # kill -9 of the broker node, booted again after ``hold``
    "reject_publish",  # a max-length ``param`` reject-publish policy on the host queue
    "queue_delete",  # the host queue deleted; ``hold`` of calm to watch what follows
    "alarm",  # a ``param`` (memory or disk) alarm on the broker for ``hold``
    # The service's clock stepped ``param`` seconds away and the service restarted
    # (SIGKILL or SIGTERM), then after ``hold`` stepped back and restarted again:
    # one of the two restarts is always with the clock stepped back.
    "clock_step",
)
#: Seconds of faults by default (CI), with HN_CHAOS_LONG=1, and the variables to choose.
SHORT_SECONDS = 75.0
LONG_SECONDS = 900.0
SEED_VARIABLE = "HN_CHAOS_SEED"
SECONDS_VARIABLE = "HN_CHAOS_SECONDS"
LONG_VARIABLE = "HN_CHAOS_LONG"
HOUR = 3600


@dataclasses.dataclass(frozen=True)
class Fault:
    """One fault of the schedule.

    Arguments:
        kind: One of :data:`KINDS`.
        hold: Seconds it lasts before it is undone.
        param: What the kind needs: a max-length, an alarm's resource, a
            clock offset and how the service is restarted ("-3600 kill").
        gap: Seconds of calm after it is undone.

    """

    kind: str
    hold: float
    param: str
    gap: float

    def __str__(self) -> str:
        param = f" {self.param}" if self.param else ""
        return f"{self.kind}{param} hold={self.hold:.1f}s gap={self.gap:.1f}s"


def faults(seed: int) -> Iterator[Fault]:
    """The endless schedule of ``seed``."""
    rng = random.Random(seed)
    while True:
        kinds = list(KINDS)
        rng.shuffle(kinds)
        for kind in kinds:
            param = ""
            if kind == "reject_publish":
                param = str(rng.choice((0, 1, 2, 5)))
            elif kind == "alarm":
                param = rng.choice(("memory", "disk"))
            elif kind == "clock_step":
                param = f"{rng.choice((-HOUR, HOUR)):+d} {rng.choice(('kill', 'term'))}"
            hold = round(rng.uniform(0.5, 5.0), 1)
            yield Fault(kind, hold, param, round(rng.uniform(0.5, 3.0), 1))


def settings(environ: dict[str, str] | None = None) -> tuple[int, float]:
    """(seed, seconds of faults) from the environment; a fresh seed unless one is given."""
    environ = dict(os.environ) if environ is None else environ
    seed_text = environ.get(SEED_VARIABLE)
    seed = int(seed_text) if seed_text else random.SystemRandom().randrange(2**32)
    if environ.get(SECONDS_VARIABLE):
        seconds = float(environ[SECONDS_VARIABLE])
    elif environ.get(LONG_VARIABLE, "") not in ("", "0"):
        seconds = LONG_SECONDS
    else:
        seconds = SHORT_SECONDS
    return seed, seconds
