"""``hypervisor-notifier-status upgrade check``: 0/1/2 on good, warning and failing setups."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import pytest
from oslo_upgradecheck.upgradecheck import Code

from hypervisor_notifier.notifier import upgradecheck

KEY = "0123456789abcdef0123456789abcdef"


def run(tmp_path, text: str, *extra: str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "hypervisor-notifier.conf"
    path.write_text(f"[outbox]\npath = {tmp_path / 'outbox.sqlite'}\n{text}")
    return subprocess.run(
        [sys.executable, "-m", "hypervisor_notifier.cmd.status", "upgrade", "check",
         "--config-file", str(path), *extra],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def results(process: subprocess.CompletedProcess[str]) -> dict[str, tuple[int, str]]:
    report = json.loads(process.stdout)
    return {c["check"]: (c["result"], c["details"]) for c in report["checks"]}


def test_a_good_setup_passes(tmp_path):
    process = run(tmp_path, f"[signing]\nkey = {KEY}\n", "--json")

    assert process.returncode == 0, process.stdout + process.stderr
    assert {name: code for name, (code, _) in results(process).items()} == {
        name: 0 for name in results(process)
    }
    assert "Configuration" in results(process)


def test_no_signing_key_is_a_warning(tmp_path):
    process = run(tmp_path, "", "--json")

    assert process.returncode == 1, process.stdout + process.stderr
    code, details = results(process)["Signing key"]
    assert code == 1 and "[signing] key is not set" in details


@pytest.mark.parametrize(
    ("text", "check", "says"),
    [
        ("[publisher]\nconfirm_window = 0\n", "Configuration", "confirm_window"),
        ("[DEFAULT]\nbackend = hyperv\n", "Backend binding", "unknown backend 'hyperv'"),
        ("[signing]\nkey = short\n", "Signing key", "[signing]"),
    ],
)
def test_a_failing_setup_fails_naming_the_problem(tmp_path, text, check, says):
    process = run(tmp_path, text, "--json")

    assert process.returncode == 2, process.stdout + process.stderr
    code, details = results(process)[check]
    assert code == 2 and says in details


def test_the_table_is_the_default_output_and_options_may_come_first(tmp_path):
    path = tmp_path / "hypervisor-notifier.conf"
    path.write_text("")
    process = subprocess.run(
        [sys.executable, "-m", "hypervisor_notifier.cmd.status", "--config-file", str(path),
         "upgrade", "check"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip

    assert process.returncode == 1
    assert "| Check: Signing key" in process.stdout
    assert "Result: Warning" in process.stdout


def test_an_unparsable_file_is_one_line_and_exit_2(tmp_path):
    process = run(tmp_path, "not an ini line\n")

    assert process.returncode == 2
    assert len(process.stdout.strip().splitlines()) == 1, process.stdout
    assert "hypervisor-notifier.conf" in process.stdout


def test_a_check_that_breaks_is_255(tmp_path, monkeypatch, capsys):
    def broken(_self):
        raise RuntimeError("bug")

    checks = (("Configuration", broken),)
    monkeypatch.setattr(upgradecheck.UpgradeChecks, "_upgrade_checks", checks)

    assert upgradecheck.main(["upgrade", "check"]) == 255
    assert "RuntimeError: bug" in capsys.readouterr().out


@dataclasses.dataclass
class Found:
    kind: str
    version: int | None
    description: str


@pytest.mark.parametrize(
    ("kind", "code"),
    [
        ("missing", Code.SUCCESS),
        ("ours", Code.SUCCESS),
        ("damaged", Code.WARNING),
        ("newer", Code.FAILURE),
        ("foreign", Code.FAILURE),
        ("directory", Code.FAILURE),
    ],
)
def test_the_outbox_file_check(kind, code):
    result = upgradecheck.check_outbox_file(
        "/var/lib/hypervisor-notifier/outbox.sqlite", lambda _path: Found(kind, 2, f"{kind} file")
    )

    assert result.code == code
    assert (
        result.details == f"[outbox] path /var/lib/hypervisor-notifier/outbox.sqlite: {kind} file"
    )


def test_the_outbox_check_reads_the_real_file(tmp_path):
    import sqlite3

    from hypervisor_notifier.notifier import outbox_schema

    ours, newer = str(tmp_path / "ours.sqlite"), str(tmp_path / "newer.sqlite")
    outbox_schema.create(ours)
    outbox_schema.create(newer)
    with sqlite3.connect(newer) as db:
        db.execute(f"PRAGMA user_version = {outbox_schema.SCHEMA_VERSION + 1}")

    assert upgradecheck.check_outbox_file(ours).code == Code.SUCCESS
    assert upgradecheck.check_outbox_file(str(tmp_path / "missing.sqlite")).code == Code.SUCCESS
    refused = upgradecheck.check_outbox_file(newer)
    assert refused.code == Code.FAILURE
    assert "newer" in refused.details
    assert upgradecheck.check_outbox_file(str(tmp_path)).code == Code.FAILURE
