"""``hypervisor-notifier-status check``: the preflight against the real broker and libvirtd."""

from __future__ import annotations

import re
import subprocess
import sys
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import amqp
import pytest

from hypervisor_notifier import wire

from .conftest import LIBVIRT_URI, TIMEOUT, TOPIC, unique

Status = tuple[int, str, dict[str, tuple[str, str]]]


def parse_table(output: str) -> dict[str, tuple[str, str]]:
    """The table's rows: check name -> (result, detail)."""
    lines = output.splitlines()
    assert [cell.strip() for cell in lines[0].split(" | ")] == ["Check", "Result", "Detail"], (
        output
    )
    rows = [[cell.strip() for cell in line.split(" | ", 2)] for line in lines[2:]]
    return {name: (result, detail) for name, result, detail in rows}


@pytest.fixture
def status(tmp_path: Path, names: dict[str, str]) -> Callable[..., Status]:
    """Run the preflight on a config of this test's host and exchange, plus ``sections``."""

    def run(*extra_args: str, **sections: dict[str, str]) -> Status:
        config = {
            "DEFAULT": {"host": names["host"]},
            "libvirt": {"connection_uri": LIBVIRT_URI},
            "publisher": {"exchange": names["exchange"]},
            "outbox": {"path": str(tmp_path / "outbox.sqlite")},
        }
        for section, values in sections.items():
            config.setdefault(section, {}).update(values)
        path = tmp_path / "notifier.conf"
        path.write_text(
            "".join(
                f"[{section}]\n" + "".join(f"{k} = {v}\n" for k, v in values.items())
                for section, values in config.items()
            )
        )
        process = subprocess.run(
            [sys.executable, "-m", "hypervisor_notifier.cmd.status", "check",
             "--config-file", str(path), "--timeout", "5", *extra_args],
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
        )  # fmt: skip
        output = process.stdout + process.stderr
        return process.returncode, output, parse_table(process.stdout)

    return run


@pytest.fixture
def exchange(broker: amqp.Channel, names: dict[str, str]) -> str:
    """This test's exchange, declared as a running service would have (``names`` deletes it)."""
    broker.exchange_declare(names["exchange"], "topic", durable=True, auto_delete=False)
    return names["exchange"]


@pytest.fixture
def rabbit_user() -> Iterator[tuple[str, str]]:
    """A real RabbitMQ user with a random password and full rights on /; deleted after."""
    user, password = unique("hn-status"), f"pw-{uuid.uuid4().hex}"
    for command in (
        ["add_user", user, password],
        ["set_permissions", "-p", "/", user, ".*", ".*", ".*"],
    ):
        subprocess.run(["rabbitmqctl", "-q", *command], check=True, capture_output=True)
    yield user, password
    subprocess.run(["rabbitmqctl", "-q", "delete_user", user], check=False, capture_output=True)


def test_good_config_passes_every_check(status, exchange, make_domain):
    make_domain().create()

    code, output, rows = status()

    assert code == 0, output
    assert set(rows) == {
        "configuration", "backend", "hypervisor (libvirt)", "broker 127.0.0.1:5672",
        "exchange", "host queue", "outbox",
    }  # fmt: skip
    assert {result for result, _ in rows.values()} == {"ok"}, output
    listed = re.fullmatch(r"connected and listed: (\d+) guests, (\d+) running",
                          rows["hypervisor (libvirt)"][1])  # fmt: skip
    assert listed and int(listed[2]) >= 1, output
    assert rows["broker 127.0.0.1:5672"][1] == "guest logged in to vhost /"
    assert rows["host queue"][1].endswith(
        "not declared yet: the service declares it when it starts"
    )


def test_wrong_broker_password_fails_without_showing_it(status, exchange):
    password = f"wrong-{uuid.uuid4().hex}"

    code, output, rows = status(
        "--debug", publisher={"transport_url": f"rabbit://guest:{password}@127.0.0.1:5672/"}
    )

    assert code == 2, output
    result, detail = rows["broker 127.0.0.1:5672"]
    assert result == "failure"
    assert detail.startswith("guest: ") and "ACCESS_REFUSED" in detail
    assert "exchange" not in rows  # nothing to ask without a login
    assert rows["hypervisor (libvirt)"][0] == "ok"
    assert password not in output


def test_password_never_appears_in_the_output(status, exchange, rabbit_user):
    user, password = rabbit_user
    url = f"rabbit://{user}:{password}@127.0.0.1:5672,{user}:{password}@127.0.0.1:1/"

    code, output, rows = status("--debug", publisher={"transport_url": url})

    assert rows["broker 127.0.0.1:5672"] == ("ok", f"{user} logged in to vhost /"), output
    assert password not in output
    # The second broker is down, but the service fails over: a warning, not a failure.
    assert rows["broker 127.0.0.1:1"][0] == "warning"
    assert code == 1


def test_missing_libvirt_socket_fails_the_hypervisor_check(status, exchange):
    uri = "test+unix:///default?socket=/nonexistent/libvirt-sock"

    code, output, rows = status(libvirt={"connection_uri": uri})

    assert code == 2, output
    result, detail = rows["hypervisor (libvirt)"]
    assert result == "failure"
    assert detail.startswith(f"cannot connect to libvirt {uri}: ")
    assert "No such file or directory" in detail
    assert rows["broker 127.0.0.1:5672"][0] == "ok"


def test_unknown_backend_fails_and_skips_the_hypervisor(status, exchange):
    code, output, rows = status(DEFAULT={"backend": "nonesuch"})

    assert code == 2, output
    assert rows["backend"] == (
        "failure",
        "unknown backend 'nonesuch' in [DEFAULT] backend; installed backends: esx, libvirt",
    )
    assert rows["hypervisor"] == ("skipped", "needs a backend")


def test_unsupported_transport_url_fails_the_broker_check(status, tmp_path):
    code, output, rows = status(publisher={"transport_url": "kafka://user:pw-kafka@broker:9092"})

    assert code == 2, output
    assert rows["broker"] == (
        "failure",
        f"{tmp_path}/notifier.conf: [publisher] transport_url: transport 'kafka' is not supported "
        "(use rabbit:// or amqp:// or rabbits:// or amqps://)",
    )
    assert "pw-kafka" not in output


def test_invalid_option_fails_the_configuration_and_skips_the_rest(status):
    code, output, rows = status(publisher={"confirm_window": "many"})

    assert code == 2, output
    result, detail = rows["configuration"]
    assert result == "failure" and "confirm_window" in detail and "notifier.conf" in detail
    assert {rows[name][0] for name in ("backend", "hypervisor", "broker", "outbox")} == {"skipped"}


def test_missing_exchange_is_a_warning(status):
    code, output, rows = status()

    assert code == 1, output
    assert rows["exchange"][0] == "warning"
    assert "does not exist yet" in rows["exchange"][1]


def test_events_waiting_without_a_consumer_are_a_warning(status, exchange, broker, names):
    queue = wire.host_queue_name(TOPIC, names["host"])
    broker.queue_declare(queue, durable=True, auto_delete=False)
    broker.queue_bind(queue, exchange, wire.routing_key(TOPIC, names["host"]))
    broker.confirm_select()  # the message is queued before the preflight looks
    broker.basic_publish(amqp.Message(b"{}"), exchange, wire.routing_key(TOPIC, names["host"]))

    code, output, rows = status()

    assert code == 1, output
    assert rows["host queue"] == (
        "warning",
        f"{queue!r}: 1 events waiting, 0 consumers: is this host's subscriber running?",
    )


def test_unwritable_outbox_is_a_warning(status, exchange):
    code, output, rows = status(outbox={"path": "/nonexistent/dir/outbox.sqlite"})

    assert code == 1, output
    assert rows["outbox"][0] == "warning"
    assert rows["outbox"][1].startswith("[outbox] path: /nonexistent/dir is not writable")


def test_esx_backend_lists_the_simulators_vms(status, exchange, vcsim):
    code, output, rows = status(DEFAULT={"backend": "esx"}, esx=vcsim.config())

    assert code == 0, output
    assert rows["hypervisor (esx)"] == ("ok", "connected and listed: 4 guests, 4 running")
    assert vcsim.password not in output


def test_esx_login_refused_fails_the_hypervisor_check(status, exchange, vcsim):
    code, output, rows = status(DEFAULT={"backend": "esx"}, esx=vcsim.config(password="wrong-pw"))

    assert code == 2, output
    assert rows["hypervisor (esx)"] == (
        "failure",
        f"vSphere {vcsim.username}@127.0.0.1:{vcsim.port} refused the login",
    )


def test_typos_in_the_config_file_fail_the_preflight_one_row_each(status, tmp_path):
    code, output, _ = status(publisher={"transprot_url": "rabbit://guest:guest@127.0.0.1/"},
                             publsher={"exchange": "hv"})  # fmt: skip

    assert code == 2, output
    path = tmp_path / "notifier.conf"
    failures = [line for line in output.splitlines() if line.startswith("configuration ")]
    assert [line.split(" | ", 2)[1:] for line in failures] == [
        ["failure", f"{path}: [publisher] transprot_url: unknown option "
                    "(did you mean transport_url?)"],
        ["failure", f"{path}: [publsher]: unknown section (did you mean publisher?)"],
    ]  # fmt: skip


#: Every character that breaks a URL, and some that are not ASCII.
SPECIAL_PASSWORD = "p/a,s#s@w:o%rd?é€"


@pytest.fixture
def special_user() -> Iterator[str]:
    """A real RabbitMQ user whose password is SPECIAL_PASSWORD; deleted after."""
    user = unique("hn-special")
    for command in (
        ["add_user", user, SPECIAL_PASSWORD],
        ["set_permissions", "-p", "/", user, ".*", ".*", ".*"],
    ):
        subprocess.run(["rabbitmqctl", "-q", *command], check=True, capture_output=True)
    yield user
    subprocess.run(["rabbitmqctl", "-q", "delete_user", user], check=False, capture_output=True)


def test_a_percent_encoded_password_of_any_characters_logs_in(status, exchange, special_user):
    encoded = urllib.parse.quote(SPECIAL_PASSWORD, safe="")
    url = f"rabbit://{special_user}:{encoded}@127.0.0.1:5672/"

    code, output, rows = status("--debug", publisher={"transport_url": url})

    assert rows["broker 127.0.0.1:5672"] == ("ok", f"{special_user} logged in to vhost /"), output
    assert SPECIAL_PASSWORD not in output and encoded not in output
    assert code == 0, output


def test_an_unencoded_password_fails_the_broker_check_without_showing_it(status, special_user,
                                                                        tmp_path):  # fmt: skip
    url = f"rabbit://{special_user}:{SPECIAL_PASSWORD}@127.0.0.1:5672/"

    code, output, rows = status("--debug", publisher={"transport_url": url})

    assert code == 2, output
    result, detail = rows["broker"]
    assert result == "failure"
    assert detail.startswith(f"{tmp_path}/notifier.conf: [publisher] transport_url: ")
    assert "must be percent-encoded" in detail
    for piece in ("p/a", "s#s", "w:o", "rd?", "é€", special_user):
        assert piece not in output
