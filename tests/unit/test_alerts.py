"""The shipped alert rules are valid, each is unit-tested, and the operations guide lists them.

promtool comes with Debian's prometheus package (bindep.txt, installed by
tools/bootstrap.sh): without it these tests fail rather than skip, so that a
machine without it cannot pass them unchecked.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "etc/hypervisor-notifier/prometheus-rules.yaml"
RULE_TESTS = ROOT / "tests/promtool/prometheus-rules-test.yaml"
OPERATIONS = ROOT / "doc/source/operations.rst"


def alert_names() -> list[str]:
    rules = yaml.safe_load(RULES.read_text())
    return [rule["alert"] for group in rules["groups"] for rule in group["rules"]]


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    if binary is None:
        pytest.fail("promtool not found: install Debian's prometheus package (tools/bootstrap.sh)")
    return subprocess.run([binary, *args], capture_output=True, text=True, timeout=120)


def test_promtool_check_rules():
    result = promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alert_names())} rules found" in result.stdout


def test_promtool_test_rules():
    result = promtool("test", "rules", str(RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_each_alert_has_a_case_that_fires_and_one_that_does_not():
    cases = yaml.safe_load(RULE_TESTS.read_text())
    fired, quiet = set(), set()
    for case in cases["tests"]:
        for check in case["alert_rule_test"]:
            (fired if check["exp_alerts"] else quiet).add(check["alertname"])
    names = set(alert_names())
    assert names - fired == set(), "alerts never seen firing in the promtool tests"
    assert names - quiet == set(), "alerts never seen quiet in the promtool tests"


def test_the_operations_guide_lists_every_alert():
    text = OPERATIONS.read_text()
    assert "etc/hypervisor-notifier/prometheus-rules.yaml" in text
    documented = re.findall(r"^\s+\* - ``(HypervisorNotifier\w+)``", text, re.M)
    assert sorted(documented) == sorted(alert_names())
