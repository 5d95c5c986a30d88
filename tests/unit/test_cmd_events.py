"""hypervisor-events watch: what it prints for each event, and which events it prints."""

from __future__ import annotations

import datetime
import json

import pytest

from hypervisor_notifier.cmd.events import (
    URL_ENVIRONMENT,
    Watch,
    build_parser,
    format_json,
    format_line,
    transport_url_from,
    use_colour,
)
from hypervisor_notifier.events import PowerState, Transition, utcnow
from tests.factories import make_event

INSTANCE_UUID = "6e9a4d5c-1b2f-4a8e-b3c7-d0e1f2a3b4c5"


def test_format_line_shows_everything_an_operator_looks_for():
    event = make_event(
        host="compute1.example.org",
        instance_uuid=INSTANCE_UUID,
        instance_name="instance-0000002a",
        transition=Transition.STOPPED,
        power_state=PowerState.SHUTDOWN,
        reason="STOPPED",
        detail="DESTROYED",
        seq=987654,
    )

    line = format_line(event, latency_ms=1234.5)

    for expected in (
        "compute1.example.org",
        "stopped",
        "instance-0000002a",
        INSTANCE_UUID,
        "SHUTDOWN",  # the power state's name
        "STOPPED",
        "DESTROYED",
        "987654",
        "1234.5",
    ):
        assert expected in line
    assert "\n" not in line


def test_format_line_marks_a_resync_event():
    assert "resync" in format_line(make_event(resync=True), latency_ms=1.0)
    assert "resync" not in format_line(make_event(resync=False), latency_ms=1.0)


def test_format_json_is_the_payload_plus_latency_and_verified():
    event = make_event()

    printed = json.loads(format_json(event, latency_ms=12.5))

    assert printed == {**event.to_payload(), "latency_ms": 12.5, "verified": False}


@pytest.fixture
def printed(capsys):
    """The lines printed so far."""
    return lambda: capsys.readouterr().out.splitlines()


@pytest.mark.parametrize("instance", [INSTANCE_UUID, "instance-0000002a"])
def test_watch_prints_only_the_chosen_instance(printed, instance):
    watch = Watch(instance=instance, as_json=True, count=None)
    mine = make_event(instance_uuid=INSTANCE_UUID, instance_name="instance-0000002a")

    watch(make_event(instance_name="instance-00000001"))
    watch(mine)
    watch(make_event(instance_name="instance-00000002"))

    assert [json.loads(line)["event_id"] for line in printed()] == [mine.event_id]


def test_watch_without_instance_prints_every_event(printed):
    watch = Watch(instance=None, as_json=False, count=None)

    for _ in range(3):
        watch(make_event())

    assert len(printed()) == 3
    assert not watch.done.is_set()


def test_watch_is_done_after_count_matching_events(printed):
    watch = Watch(instance=INSTANCE_UUID, as_json=False, count=2)

    watch(make_event(instance_uuid=INSTANCE_UUID))
    watch(make_event())  # another instance: not counted
    assert not watch.done.is_set()
    watch(make_event(instance_uuid=INSTANCE_UUID))

    assert watch.done.is_set()
    assert len(printed()) == 2


def test_watch_reports_the_latency_since_the_event_occurred(printed):
    watch = Watch(instance=None, as_json=True, count=None)
    occurred_at = utcnow() - datetime.timedelta(seconds=3)

    watch(make_event(occurred_at=occurred_at))

    (line,) = printed()
    # At least the 3 s that passed; the test itself takes far less than a minute.
    assert 3000 <= json.loads(line)["latency_ms"] < 60_000


def test_watch_prints_only_the_chosen_transitions(printed):
    watch = Watch(instance=None, as_json=True, count=None,
                  transitions=[Transition.STOPPED, Transition.CRASHED])  # fmt: skip
    wanted = [make_event(transition=Transition.STOPPED), make_event(transition=Transition.CRASHED)]

    watch(wanted[0])
    watch(make_event(transition=Transition.STARTED))
    watch(wanted[1])

    assert [json.loads(line)["event_id"] for line in printed()] == [e.event_id for e in wanted]


def test_colour_marks_the_transition_and_only_text_lines(printed):
    event = make_event(transition=Transition.STOPPED)

    Watch(instance=None, as_json=False, count=None, colour=True)(event)
    Watch(instance=None, as_json=True, count=None, colour=True)(event)
    text, as_json = printed()

    assert "\033[31mstopped" in text and event.instance_uuid in text
    assert "\033" not in as_json and json.loads(as_json)["transition"] == "stopped"
    assert "\033" not in format_line(event, 0)


class Stream:
    def __init__(self, tty: bool) -> None:
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


@pytest.mark.parametrize(
    ("choice", "tty", "environ", "expected"),
    [
        ("auto", True, {}, True),
        ("auto", False, {}, False),  # a pipe, a file: no escape codes in it
        ("auto", True, {"NO_COLOR": "1"}, False),
        ("always", False, {}, True),
        ("never", True, {}, False),
    ],
)
def test_colour_only_on_a_terminal_unless_asked(choice, tty, environ, expected):
    assert use_colour(choice, Stream(tty), environ) is expected


def args(*argv: str):
    return build_parser().parse_args(["watch", *argv])


def test_the_broker_url_comes_from_a_file_before_the_environment_and_the_config(tmp_path):
    url_file = tmp_path / "url"
    url_file.write_text("rabbit://watcher:from-file@broker:5672/\n")
    environ = {URL_ENVIRONMENT: "rabbit://watcher:from-env@broker:5672/"}

    assert transport_url_from(args("--transport-url-file", str(url_file)), environ, "conf") == (
        "rabbit://watcher:from-file@broker:5672/"
    )
    assert transport_url_from(args(), environ, "conf") == environ[URL_ENVIRONMENT]
    assert transport_url_from(args(), {}, "conf") == "conf"


def test_an_empty_or_missing_url_file_is_an_error_naming_it(tmp_path):
    empty = tmp_path / "empty"
    empty.write_text("\n")

    with pytest.raises(ValueError, match=r"--transport-url-file '.*empty' is empty"):
        transport_url_from(args("--transport-url-file", str(empty)), {}, None)
    with pytest.raises(ValueError, match=r"--transport-url-file '.*nope': No such file"):
        transport_url_from(args("--transport-url-file", str(tmp_path / "nope")), {}, None)


def test_a_password_on_the_command_line_is_warned_about(capsys):
    url = "rabbit://watcher:hunter2@broker:5672/"

    assert transport_url_from(args("--transport-url", url), {}, None) == url

    err = capsys.readouterr().err
    assert "visible to every user" in err and URL_ENVIRONMENT in err
    assert "hunter2" not in err


def test_file_and_command_line_urls_are_exclusive(tmp_path, capsys):
    with pytest.raises(SystemExit) as exited:
        args("--transport-url-file", "f", "--transport-url", "rabbit://h/")
    assert exited.value.code == 2
