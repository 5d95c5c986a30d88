"""The systemd unit: ``systemd-analyze verify`` and ``security`` pass, and it matches the defaults.

systemd is not PID 1 on the test machines; both commands work offline on
the file. ``verify`` does not look up ``User=`` (the user need not exist),
but it does check that ``ExecStart``'s program exists: the test points it at
the ``hypervisor-notifier`` of the test environment, as an operator points
it at the one pip installed.
"""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hypervisor_notifier.conf import outbox

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "etc/hypervisor-notifier/hypervisor-notifier.service"
INSTALLED_PROGRAM = "/usr/local/bin/hypervisor-notifier"
#: systemd-analyze security's exposure, 0-10 (its --threshold is in tenths).
MAX_EXPOSURE = 2.0


def systemd_analyze(*args: str) -> subprocess.CompletedProcess[str]:
    program = shutil.which("systemd-analyze")
    assert program, "systemd-analyze is missing: install Debian's systemd (bindep.txt)"
    return subprocess.run([program, *args], capture_output=True, text=True, timeout=60)


@pytest.fixture
def unit_copy(tmp_path):
    """Write the unit, edited by ``edit``, with ExecStart on this environment's program."""
    program = Path(sys.executable).parent / "hypervisor-notifier"
    assert program.exists(), program

    def write(edit=lambda text: text) -> Path:
        text = UNIT.read_text()
        assert INSTALLED_PROGRAM in text
        path = tmp_path / "hypervisor-notifier.service"
        path.write_text(edit(text.replace(INSTALLED_PROGRAM, str(program))))
        return path

    return write


def test_unit_passes_systemd_analyze_verify_without_a_warning(unit_copy):
    result = systemd_analyze("verify", str(unit_copy()))

    assert (result.returncode, result.stderr, result.stdout) == (0, "", "")


@pytest.mark.parametrize(
    ("edit", "complaint"),
    [
        (lambda text: text.replace("ProtectSystem=strict", "ProtectSystem=stricct"),
         "Failed to parse protect system value"),
        (lambda text: text.replace("UMask=", "UMaks="), "Unknown key 'UMaks'"),
    ],
)  # fmt: skip
def test_the_verify_check_catches_a_broken_unit(unit_copy, edit, complaint):
    result = systemd_analyze("verify", str(unit_copy(edit)))

    assert complaint in result.stderr


def test_unit_is_sandboxed(unit_copy):
    result = systemd_analyze(
        "security", "--offline=yes", f"--threshold={MAX_EXPOSURE * 10:.0f}", str(unit_copy())
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert "Overall exposure level for hypervisor-notifier.service" in result.stdout


def test_unit_matches_the_service_defaults():
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read_string(UNIT.read_text())
    service = unit["Service"]

    state_dir = Path("/var/lib") / service["StateDirectory"]
    outbox_default = next(opt.default for opt in outbox.opts if opt.name == "path")
    assert Path(outbox_default).parent == state_dir
    assert service["ExecStart"].split() == [
        INSTALLED_PROGRAM, "--config-file", "/etc/hypervisor-notifier/hypervisor-notifier.conf",
    ]  # fmt: skip
    assert service["User"] == "hypervisor-notifier"
    # sd_notify: READY=1 and watchdog pings (hypervisor_notifier/notifier/systemd.py).
    assert (service["Type"], service["NotifyAccess"]) == ("notify", "main")
    assert int(service["WatchdogSec"]) > 0
    for option in ("NoNewPrivileges", "ProtectHome", "PrivateTmp"):
        assert service[option] == "yes", option
    assert service["ProtectSystem"] == "strict"
