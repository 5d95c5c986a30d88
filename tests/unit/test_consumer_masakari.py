"""The masakari consumer: which events become notifications, and how the client retries.

The client talks HTTP to a small server of this test's own, scripted per
request; the real masakari API is in tests/masakari.
"""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator

import pytest
from keystoneauth1 import adapter, noauth, session

from hypervisor_notifier import wire
from hypervisor_notifier.consumer import masakari
from hypervisor_notifier.consumer.dispatcher import Decision
from hypervisor_notifier.consumer.masakari import Outcome
from hypervisor_notifier.events import PowerState, Transition
from hypervisor_notifier.faults import Fault
from tests.factories import make_event, make_fault

FAILED = {"event": "LIFECYCLE", "vir_domain_event": "STOPPED_FAILED"}
IO_ERROR_REPORT = {"event": "IO_ERROR", "vir_domain_event": "IO_ERROR_REPORT"}


@pytest.mark.parametrize("detail", ["FAILED", "CRASHED"])
def test_a_guest_stopped_by_a_failure_is_the_notification_masakaris_engine_acts_on(detail):
    event = make_event(host="compute7", reason="STOPPED", detail=detail)

    notification = masakari.notification_for(event)

    assert notification == {
        "type": "VM",
        "hostname": "compute7",
        "generated_time": event.occurred_at.strftime("%Y-%m-%dT%H:%M:%S.%f"),
        "payload": {
            "event": "LIFECYCLE",
            "instance_uuid": event.instance_uuid,
            "vir_domain_event": "STOPPED_FAILED",
        },
    }


@pytest.mark.parametrize(
    ("transition", "reason", "detail", "resync"),
    [
        (Transition.STOPPED, "STOPPED", "SHUTDOWN", False),  # the guest shut itself down
        (Transition.STOPPED, "STOPPED", "DESTROYED", False),  # an operator destroyed it
        (Transition.RESUMED, "RESUMED", "UNPAUSED", False),
        (Transition.STOPPED, "RESYNC", "SHUTOFF", True),  # found off: not a failure seen
        (Transition.CRASHED, "RESYNC", "CRASHED", True),  # found crashed: reported before
        (Transition.CRASHED, "CRASHED", "CRASHLOADED", False),  # its crash kernel took over
    ],
)
def test_anything_else_becomes_no_notification(transition, reason, detail, resync):
    event = make_event(transition=transition, power_state=PowerState.SHUTDOWN, reason=reason,
                       detail=detail, resync=resync)  # fmt: skip

    assert masakari.notification_for(event) is None


@pytest.mark.parametrize(
    ("event", "payload"),
    [
        # A panicked guest, kept crashed or destroyed next (nova's on_crash=destroy).
        (
            make_event(
                transition=Transition.CRASHED,
                power_state=PowerState.CRASHED,
                reason="CRASHED",
                detail="PANICKED",
            ),
            FAILED,
        ),
        (make_fault(Fault.WATCHDOG, "reset"), FAILED),
        (make_fault(Fault.WATCHDOG, "poweroff"), FAILED),
        (
            make_fault(
                Fault.IO_ERROR,
                "report",
                details={"action": "report", "device": "vda", "error": "enospc"},
            ),
            IO_ERROR_REPORT,
        ),
        # A backend that gave libvirt's action name only.
        (make_fault(Fault.IO_ERROR, details={}, detail="REPORT"), IO_ERROR_REPORT),
    ],
    ids=["crashed", "watchdog-reset", "watchdog-poweroff", "io-error-report", "io-error-detail"],
)
def test_a_guest_failure_or_fault_is_the_payload_masakaris_engine_acts_on(event, payload):
    notification = masakari.notification_for(event)

    assert notification is not None
    assert notification["payload"] == {**payload, "instance_uuid": event.instance_uuid}
    assert notification["type"] == "VM" and notification["hostname"] == event.host


@pytest.mark.parametrize(
    "event",
    [
        make_fault(Fault.IO_ERROR, "pause"),  # paused, not failed: a restart does not help
        make_fault(Fault.IO_ERROR, "none"),
        make_fault(Fault.WATCHDOG, "pause"),
        make_fault(Fault.WATCHDOG, "none"),
        make_fault(Fault.AGENT_CONNECTED, detail="CHANNEL"),
        make_fault(Fault.AGENT_DISCONNECTED, detail="CHANNEL"),
        make_fault(Fault.CONTROL_ERROR),
        make_fault(Fault.MEMORY_FAILURE, "inject"),
        make_fault(Fault.DEVICE_REMOVED),
        make_fault(Fault.DEVICE_REMOVAL_FAILED),
    ],
    ids=lambda event: f"{event.fault.value}-{event.details.get('action', '')}",
)
def test_an_unrelated_fault_becomes_no_notification(event):
    assert masakari.notification_for(event) is None


class ScriptedAPI(http.server.ThreadingHTTPServer):
    """Answers each POST with the next status of ``script`` (then 201); records the bodies."""

    def __init__(self, script: list[int]) -> None:
        self.script = list(script)
        self.bodies: list[dict] = []
        super().__init__(("127.0.0.1", 0), _Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


class _Handler(http.server.BaseHTTPRequestHandler):
    server: ScriptedAPI

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.bodies.append({"path": self.path, **body})
        status = self.server.script.pop(0) if self.server.script else 201
        payload = json.dumps({"notification": body["notification"]}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *_args: object) -> None:
        pass


@pytest.fixture
def api() -> Iterator[callable]:
    servers: list[ScriptedAPI] = []

    def start(*script: int) -> ScriptedAPI:
        server = ScriptedAPI(list(script))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def client_for(url: str) -> masakari.MasakariClient:
    auth = noauth.NoAuth(endpoint=url)
    masakari_api = adapter.Adapter(session.Session(auth=auth), service_type="instance-ha")
    client = masakari.MasakariClient(masakari_api, retry_interval_max=0.05)
    client.retry_initial = 0.01
    return client


NOTIFICATION = masakari.notification_for(make_event(reason="STOPPED", detail="FAILED"))


def test_the_client_retries_an_api_in_trouble_until_it_accepts(api):
    server = api(503, 500, 429)

    outcome = client_for(server.url).send(NOTIFICATION)

    assert outcome == "accepted"
    assert len(server.bodies) == 4
    assert all(body == {"path": "/v1/notifications", "notification": NOTIFICATION}
               for body in server.bodies)  # fmt: skip


def test_the_client_retries_an_api_that_is_not_listening(api):
    server = api()
    url = server.url
    server.shutdown()
    server.server_close()
    client = client_for(url)
    stopping = threading.Timer(0.3, client.stopping.set)
    stopping.start()

    with pytest.raises(masakari.Stopped):
        client.send(NOTIFICATION)

    assert client.retries >= 2


def test_a_notification_masakari_already_has_counts_as_delivered(api):
    assert client_for(api(409).url).send(NOTIFICATION) == "duplicate"


@pytest.mark.parametrize("status", [400, 404])
def test_a_notification_masakari_refuses_for_good_is_not_retried(api, status):
    server = api(status)

    with pytest.raises(masakari.Refused, match=str(status)):
        client_for(server.url).send(NOTIFICATION)

    assert len(server.bodies) == 1


class ScriptedClient:
    """Answers each notification with the next of ``answers`` (an exception is raised)."""

    def __init__(self, *answers: str | Exception) -> None:
        self.answers = list(answers)

    def send(self, notification: dict) -> str:
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


def test_each_event_is_counted_once_under_what_became_of_it():
    client = ScriptedClient("accepted", "duplicate", masakari.Refused("HTTP 400"),
                            masakari.Stopped("HTTP 503"))  # fmt: skip
    consumer = masakari.MasakariConsumer(client, "rabbit://127.0.0.1:5672/", "q")  # type: ignore[arg-type]
    shutdown = make_event(reason="STOPPED", detail="SHUTDOWN", seq=1)
    failures = [make_event(reason="STOPPED", detail="FAILED", seq=seq) for seq in range(2, 6)]

    decisions = [consumer.subscriber.dispatcher.dispatch(wire.encode(event))
                 for event in (shutdown, *failures)]  # fmt: skip

    # Stopping while masakari is retried: that event stays queued, counted nowhere.
    assert decisions == [Decision.ACK] * 4 + [Decision.REDELIVER]
    assert consumer.stats == {Outcome.IGNORED: 1, Outcome.NOTIFIED: 1, Outcome.DUPLICATE: 1,
                              Outcome.REFUSED: 1}  # fmt: skip


def test_the_command_refuses_a_typo_in_its_file_in_one_line(tmp_path, capsys):
    from hypervisor_notifier.cmd import masakari as command

    conf = tmp_path / "masakari.conf"
    conf.write_text("[hypervisor_notifier]\nqueu = x\n\n[masakari]\nauth_type = none\n")

    assert command.main(["--config-file", str(conf)]) == 2

    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"hypervisor-notifier-masakari: error: {conf}: [hypervisor_notifier]")
    assert "queu" in line


def test_the_command_answers_its_version(capsys):
    from hypervisor_notifier.cmd import masakari as command

    with pytest.raises(SystemExit) as exit_status:
        command.main(["--version"])

    assert exit_status.value.code == 0
    assert capsys.readouterr().out.strip()
