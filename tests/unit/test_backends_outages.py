"""The backend skeleton across outages: announced once, nothing reported until the resync.

What both backends inherit (the fake hypervisor of test_backends_dispatch):
an outage is announced to the listener once, whether the hypervisor was
lost or never reached; events queued behind a close are reported before the
outage is announced, never after the next connection's resync; a connection
whose first resync fails is not served.
"""

from __future__ import annotations

from hypervisor_notifier.backends import base, dispatch
from tests.unit.test_backends_dispatch import FakeBackend, FakeEvent, Recorder


class FailingResyncs(Recorder):
    """A listener whose first ``failures`` resyncs find the hypervisor gone."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    def on_resync(self, reason: str) -> None:
        super().on_resync(reason)
        if self.failures:
            self.failures -= 1
            raise base.BackendUnavailable("listing domains failed: end of file")


def test_a_hypervisor_unreachable_at_start_is_announced_once_not_per_attempt(started):
    listener = Recorder()
    started(FakeBackend(failures=4), listener)

    listener.wait_for(("resync", "connected"))
    assert listener.calls == [
        ("disconnected", "cannot connect to fake"),
        ("resync", "connected"),
    ]


def test_a_lost_connection_and_the_failed_attempts_after_it_are_one_outage(started):
    listener = Recorder()
    backend = started(FakeBackend(), listener)
    listener.wait_for(("resync", "connected"))
    backend.failures = 3  # the next attempts fail

    backend.hand_off(dispatch.Closed(backend._generation, "end of file"))
    listener.wait_for(("resync", "connected"), count=2)

    assert listener.calls == [
        ("resync", "connected"),
        ("disconnected", "end of file"),
        ("resync", "connected"),
    ]


def test_events_queued_behind_a_close_are_reported_before_the_outage_is_announced(started):
    listener = Recorder()
    listener.hold.clear()
    backend = started(FakeBackend(), listener)
    listener.wait_for(("resync", "connected"))
    # libvirt may flush a connection's events after its close callback.
    backend.hand_off(
        FakeEvent("before"), dispatch.Closed(backend._generation, "end of file"), FakeEvent("late")
    )
    listener.hold.set()
    listener.wait_for(("resync", "connected"), count=2)
    backend.hand_off(FakeEvent("after"))

    listener.wait_for(("events", ["after"]))
    # "late" happened before the loss: reported, before the outage, not lost.
    assert listener.calls == [
        ("resync", "connected"),
        ("events", ["before"]),
        ("events", ["late"]),
        ("disconnected", "end of file"),
        ("resync", "connected"),
        ("events", ["after"]),
    ]


def test_a_connection_whose_first_resync_fails_is_lost_and_reports_nothing(started):
    listener = FailingResyncs(failures=2)
    listener.hold.clear()
    backend = started(FakeBackend(), listener)
    listener.wait_for(("resync", "connected"))
    backend.hand_off(FakeEvent("while-unknown"))
    listener.hold.set()

    listener.wait_for(("resync", "connected"), count=3)
    backend.hand_off(FakeEvent("after"))
    listener.wait_for(("events", ["after"]))

    assert listener.calls == [
        ("resync", "connected"),
        ("disconnected", "resync failed: listing domains failed: end of file"),
        ("resync", "connected"),
        ("resync", "connected"),
        ("events", ["after"]),
    ]
    assert (backend.opened, backend.reconnects) == (3, 2)
