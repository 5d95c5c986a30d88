"""Events the broker refused (nacked, or returned as unroutable): counts, resend timing, report.

The publisher keeps refused entries (see
:mod:`~hypervisor_notifier.notifier.confirms`) and sends them again on the
same connection once the backoff here says so. While refusals go on, and for
:data:`REPORTED_FOR` seconds after the last one, :attr:`Refusals.problem`
says what happens, for ``/healthz``; the log says it once per episode.
"""

from __future__ import annotations

import logging
import time

from hypervisor_notifier.backoff import Backoff

LOG = logging.getLogger(__name__)

#: Seconds ``/healthz`` keeps reporting refusals after the last one (and its resend's confirm).
REPORTED_FOR = 30.0


class Refusals:
    """Counts refusals and says when to send the refused entries again.

    Arguments:
        backoff_max: Largest delay before a resend (the first is 0.1 s).

    """

    def __init__(self, backoff_max: float) -> None:
        #: Messages the broker nacked, and returned as unroutable, since start.
        self.nacked = 0
        self.returned = 0
        self._backoff = Backoff(initial=0.1, maximum=backoff_max)
        self._resend_at: float | None = None
        self._last: tuple[float, str] | None = None  # (when, what)
        self._retrying = False

    def on_nack(self, count: int) -> None:
        """``count`` messages were nacked."""
        self.nacked += count
        self._note(
            f"the broker refuses events ({self.nacked} nacked since start: a full queue with "
            "overflow reject-publish?); sending them again"
        )

    def on_return(self, exchange: str, routing_key: str, *, declaring: bool) -> None:
        """A message came back unroutable; ``declaring``: its queue is being declared again."""
        self.returned += 1
        remedy = (
            "declaring the host queue again and sending them again"
            if declaring
            else "they wait in the outbox until a queue is bound (declare_host_queue false)"
        )
        self._note(
            f"the broker returned events as unroutable ({self.returned} since start: no queue "
            f"bound to {routing_key!r} on exchange {exchange!r}); {remedy}"
        )

    def problem(self) -> str | None:
        """What /healthz reports: the last refusal, while it is recent or not yet repaired."""
        if self._last is None:
            return None
        when, what = self._last
        if self._retrying or time.monotonic() - when < REPORTED_FOR:
            return what
        return None

    def update(self, *, retrying: bool, waiting: int) -> None:
        """Follow the tracker: schedule the resend of ``waiting`` entries; reset once none is."""
        if self._retrying and not retrying:
            LOG.info("the events the broker refused are confirmed now")
            self._backoff.reset()
        self._retrying = retrying
        if waiting and self._resend_at is None:
            self._resend_at = time.monotonic() + self._backoff.next()

    def seconds_to_resend(self) -> float | None:
        """Seconds until the waiting refused entries are due (0: now); None if none waits."""
        if self._resend_at is None:
            return None
        return max(0.0, self._resend_at - time.monotonic())

    def resent(self) -> None:
        """The waiting entries were sent again."""
        self._resend_at = None

    def forget(self) -> None:
        """The connection is gone: its refused entries go back to the outbox."""
        self._resend_at = None
        self._retrying = False

    def _note(self, what: str) -> None:
        if self.problem() is None:
            LOG.warning("%s", what)  # once per episode: a burst is refused by the thousand
        else:
            LOG.debug("%s", what)
        self._last = (time.monotonic(), what)
