"""The real service logs through oslo.log (log_dir, use_json, use_journal); libvirt-only is quiet.

The journal is a stand-in: a unix datagram socket bound by the test, where
the service's journal handler is pointed (journald's protocol: one datagram
of FIELD=value lines per record).
"""

from __future__ import annotations

import contextlib
import json
import queue
import socket
import struct
import threading

import pytest

from tests.functional.faults import wait_until
from tests.service_process import TIMEOUT

#: A broker port nothing listens on: the publisher logs an ERROR and retries.
CLOSED_URL = "rabbit://guest:s3cret-pw@127.0.0.1:1/"

#: Makes pyVmomi (the ESX binding) unimportable, as on a host with only libvirt's.
BLOCK_PYVMOMI = """
import importlib.abc, sys
class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("pyVim", "pyVmomi"):
            raise ImportError(f"No module named {name!r}", name=name)
        return None
sys.meta_path.insert(0, Blocker())
"""


#: Points the service's journal sender at the test's socket (python-systemd, if
#: installed, would go to the real journald: it is set aside).
JOURNAL_AT = """
import oslo_log.handlers
import hypervisor_notifier.logs
oslo_log.handlers.journal = None
hypervisor_notifier.logs.JOURNAL_SOCKET = {path!r}
"""


def parse_journal_datagram(data: bytes) -> dict[str, str]:
    """journald's native protocol: FIELD=value lines, or FIELD\\n<u64 length><value>\\n."""
    fields: dict[str, str] = {}
    while data:
        line, _, rest = data.partition(b"\n")
        if b"=" in line:
            name, _, value = line.partition(b"=")
            fields[name.decode()] = value.decode()
            data = rest
        else:
            (length,) = struct.unpack("<Q", rest[:8])
            fields[line.decode()] = rest[8 : 8 + length].decode()
            data = rest[8 + length + 1 :]
    return fields


def test_log_dir_writes_the_commands_log_file_there(tmp_path, start_service):
    log_dir = tmp_path / "logs"
    log_dir.mkdir()
    service = start_service(DEFAULT={"log_dir": str(log_dir)})
    log_file = log_dir / "hypervisor-notifier.log"

    wait_until(lambda: log_file.exists() and "connected to broker" in log_file.read_text())
    assert "connected to libvirt" in log_file.read_text()
    assert "connected to broker" not in service.log  # a file was asked for: not stderr too


def test_use_json_writes_one_json_object_per_line_with_secrets_masked(tmp_path, start_service):
    log_file = tmp_path / "service.json.log"
    start_service(
        transport_url=CLOSED_URL,
        DEFAULT={"log_file": str(log_file), "use_json": "true"},
    )

    def error_records() -> list[dict]:
        if not log_file.exists():
            return []
        records = [json.loads(line) for line in log_file.read_text().splitlines()]
        return [r for r in records if r["levelname"] == "ERROR"]

    wait_until(lambda: error_records())
    record = error_records()[0]
    assert "cannot publish to broker" in record["message"]
    assert record["name"] == "hypervisor_notifier.notifier.publisher"
    assert "s3cret-pw" not in log_file.read_text()


@pytest.fixture
def journal(tmp_path):
    """A stand-in journald socket, drained as journald does; yields (path, receive).

    ``receive()`` returns the next entry (a dict of its fields).
    """
    path = str(tmp_path / "journal.socket")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    received: queue.SimpleQueue[bytes] = queue.SimpleQueue()

    def drain() -> None:  # a full socket would block the service's logging
        with contextlib.suppress(OSError):
            while data := sock.recv(1 << 20):
                received.put(data)

    threading.Thread(target=drain, daemon=True).start()

    def receive() -> dict[str, str]:
        return parse_journal_datagram(received.get(timeout=TIMEOUT))

    yield path, receive
    sock.shutdown(socket.SHUT_RDWR)
    sock.close()


def test_use_journal_sends_each_record_with_its_priority(journal, start_service):
    path, receive = journal
    start_service(
        transport_url=CLOSED_URL,
        DEFAULT={"use_journal": "true"},
        prelude=JOURNAL_AT.format(path=path),
    )

    entries = []
    while not any(e.get("LOGGER_LEVEL") == "ERROR" for e in entries):
        entries.append(receive())  # times out (a failure) if no ERROR comes

    error = next(e for e in entries if e["LOGGER_LEVEL"] == "ERROR")
    assert error["PRIORITY"] == "3"  # err, not info (6)
    assert "cannot publish to broker" in error["MESSAGE"]
    assert "s3cret-pw" not in json.dumps(entries)
    infos = [e for e in entries if e["LOGGER_LEVEL"] == "INFO"]
    assert infos and all(e["PRIORITY"] == "6" for e in infos)
    assert error["SYSLOG_IDENTIFIER"]


def test_a_libvirt_only_host_starts_without_an_error_line(start_service):
    service = start_service(prelude=BLOCK_PYVMOMI)

    service.wait_for_log("connected to broker")
    service.wait_for_log("resync (connected)")
    assert " ERROR " not in service.log, service.log
    assert "pyVim" not in service.log


def test_a_configured_backend_whose_binding_is_missing_names_the_extra(start_service):
    service = start_service(prelude=BLOCK_PYVMOMI, DEFAULT={"backend": "esx"})

    assert service.process.wait(TIMEOUT) == 2
    service.wait_for_log("pip install 'hypervisor-notifier[esx]'")
    assert len(service.lines) == 1, service.log  # one line, no traceback


@pytest.mark.parametrize(
    ("options", "says"),
    [
        ({"log_dir": "/nonexistent/logs"},
         "[DEFAULT] log_dir/log_file /nonexistent/logs/hypervisor-notifier.log: No such file"),
        ({"log_config_append": "/nonexistent/logging.conf"},
         "[DEFAULT] log_config_append /nonexistent/logging.conf: "),
    ],
)  # fmt: skip
def test_a_log_destination_that_cannot_be_used_is_one_line_and_exit_2(
    start_service, options, says
):
    service = start_service(DEFAULT=options)

    assert service.process.wait(TIMEOUT) == 2
    service.wait_for_log(says)
    assert len(service.lines) == 1, service.log
