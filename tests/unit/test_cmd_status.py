"""The preflight's table and exit status; its checks are in tests/functional/test_status.py."""

from __future__ import annotations

from hypervisor_notifier.cmd.status import format_table
from hypervisor_notifier.notifier import preflight
from hypervisor_notifier.notifier.preflight import Check, Result


def test_table_aligns_its_columns():
    table = format_table(
        [Check("configuration", Result.OK, "a.conf"), Check("hypervisor", Result.FAILURE, "x")]
    )

    assert table.splitlines() == [
        "Check         | Result  | Detail",
        "--------------+---------+-------",
        "configuration | ok      | a.conf",
        "hypervisor    | failure | x",
    ]


def test_details_are_masked_whatever_a_check_puts_in_them():
    check = Check("broker", Result.FAILURE, "rabbit://nova:s3cret@b1:5672/ refused")

    assert check.detail == "rabbit://nova:****@b1:5672/ refused"


def test_exit_status_is_the_worst_result():
    def checks(*results: Result) -> list[Check]:
        return [Check(result.value, result, "") for result in results]

    assert preflight.exit_status(checks(Result.OK, Result.SKIPPED)) == 0
    assert preflight.exit_status(checks(Result.OK, Result.WARNING, Result.SKIPPED)) == 1
    assert preflight.exit_status(checks(Result.WARNING, Result.FAILURE, Result.OK)) == 2
    assert preflight.exit_status([]) == 0
