"""The shipped dashboard and alert rules query only metrics the running service exports.

The exported names are read from the real service's ``/metrics`` (its
``# TYPE`` lines, so a labelled family with no sample yet counts too), not
from a list kept by hand: a renamed or removed metric fails this test.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.service_process import http_get

ETC = Path(__file__).resolve().parents[2] / "etc/hypervisor-notifier"

# The series each Prometheus metric type exposes, by suffix.
SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
    "info": ("_info",),
    "stateset": ("",),
    "unknown": ("",),
}
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool",
            "and", "or", "unless", "inf", "nan"}  # fmt: skip
# Series Prometheus itself adds to every target.
SCRAPE_SERIES = {"up"}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression (or Grafana's ``label_values``) selects."""
    expr = re.sub(r"label_values\((.*),\s*\w+\s*\)", r"\1", expr)
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)  # strings: label values, $variables
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # ranges
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    names = set()
    for match in re.finditer(r"(?<![\w$.])([A-Za-z_:][\w:]*)(\s*\()?", expr):
        if not match.group(2) and match.group(1).lower() not in KEYWORDS:
            names.add(match.group(1))
    return names


def test_metric_names_reads_promql():
    # The parser below must find what a query names, or the test could not fail.
    assert metric_names(
        'histogram_quantile(0.99, sum by (instance, le) (rate(a_bucket{job="x", i=~"$i"}'
        "[$__rate_interval]))) / on (instance) b offset 5m > bool 1e3"
    ) == {"a_bucket", "b"}
    assert metric_names('label_values(c_info{job="$job"}, instance)') == {"c_info"}
    assert metric_names("increase(d_total[1h]) > 0 and up == 0") == {"d_total", "up"}


def dashboard_queries(node: object) -> Iterator[str]:
    """Every query of a Grafana dashboard: panel targets and template variables."""
    if isinstance(node, dict):
        for key, value in node.items():
            if not isinstance(value, str):
                yield from dashboard_queries(value)
            # A data source variable's "query" is a type name, not PromQL.
            elif key == "expr" or (key in ("query", "definition") and "(" in value):
                yield value
    elif isinstance(node, list):
        for item in node:
            yield from dashboard_queries(item)


def exported_series(text: str) -> set[str]:
    """Every series name a ``/metrics`` text can hold, from its families' types."""
    names = set()
    for family in text_string_to_metric_families(text):
        names.update(family.name + suffix for suffix in SUFFIXES[family.type])
        names.update(sample.name for sample in family.samples)
    return names


def test_dashboard_and_alerts_query_exported_metrics(start_service):
    service = start_service()
    status, text = http_get(service.health_port, "/metrics")
    assert status == 200, text
    exported = exported_series(text)

    dashboard = json.loads((ETC / "grafana-dashboard.json").read_text())
    queries = list(dashboard_queries(dashboard))
    rules = yaml.safe_load((ETC / "prometheus-rules.yaml").read_text())
    alerts = {rule["alert"]: rule["expr"] for group in rules["groups"] for rule in group["rules"]}

    unknown = {}
    for where, expr in [("dashboard", q) for q in queries] + list(alerts.items()):
        names = metric_names(expr)
        assert names, f"{where}: no metric in {expr!r}"
        if names - exported - SCRAPE_SERIES:
            unknown[f"{where}: {expr}"] = sorted(names - exported - SCRAPE_SERIES)
    assert not unknown, f"not exported by the service: {json.dumps(unknown, indent=2)}"
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    print(
        f"\n{len(panels)} panels, {len(queries)} dashboard queries and {len(alerts)} alerts: "
        f"every metric they name is among the {len(exported)} series names /metrics exports"
    )
