"""Static checks of the dashboard, the alert rules and the Prometheus/Grafana provisioning (no services needed).

The live counterpart, tests/integration/test_metrics_live.py, scrapes a running worker.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from typing import Any

import pytest
import yaml

from tests.observability import (
    ALERTS_PATH,
    ALERTS_TEST_PATH,
    PROMETHEUS_PATH,
    PROMETHEUS_SYNTHETIC,
    README_PATH,
    ROOT,
    alert_rules,
    alerts,
    dashboard,
    dashboard_exprs,
    github_anchors,
    metric_names,
)
from xnovu.errors import NOVU_CONFIG_STATUSES
from xnovu.metrics import METRICS, Metrics

DURATION = re.compile(r"^(\d+(ms|s|m|h|d|w|y))+$")
#: The situations the alert rules must cover (issue: worker down, no poll, DLQ growing, key rotated, 429s, leases).
REQUIRED_ALERTS = {
    "XnovuWorkerDown",
    "XnovuNoPoll",
    "XnovuDeadLetterQueueGrowing",
    "XnovuNovuKeyRejected",
    "XnovuNovuPlanLimitReached",
    "XnovuNovuRateLimited",
    "XnovuProcessingLeaseExpired",
}
REQUIRED_PANELS = (
    "Throughput by outcome",
    "Novu requests by status code",
    "Trigger latency",
    "Poll batch size",
    "Dead-letter queue",
    "Novu token budget",
    "Schedule lag",
    "Workers up",
    "Novu key rejected: 401",
    "Novu plan limit reached: 402",
    "Novu key forbidden: 403",
    "Attempts held on Novu configuration",
)
#: Stat panels that count something that can be none at all (no worker left, no error): 0, never "No data".
ZERO_NOT_NO_DATA = ("Workers up", "Temporal workers polling", "Novu key", "Novu plan limit", "Attempts held")
_STATUS_MATCHER = re.compile(r'status_code(=~|=)"([^"]*)"')


def _declared_samples() -> set[str]:
    """Every sample name the worker's registry can expose (histograms: _bucket/_sum/_count; counters: _total)."""
    names: set[str] = set()
    for family in METRICS.registry.collect():
        if family.type == "histogram":
            names |= {f"{family.name}_bucket", f"{family.name}_sum", f"{family.name}_count"}
        elif family.type == "counter":
            names |= {f"{family.name}_total", f"{family.name}_created"}
        else:
            names.add(family.name)
    return names


# --- PromQL name extraction ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ('sum by (kind, le) (rate(a_bucket{kind="new"}[$__rate_interval]))', {"a_bucket"}),
        ("time() - max by (kind) (b) > 3 * max by (kind) (c)", {"b", "c"}),
        ('sum(rate(d_total{status_code=~"401|403"}[5m])) / clamp_min(e, 1e-9) > 0.05', {"d_total", "e"}),
        ('up{job=~"xnovu.*"} == 0 or f == 0', {"up", "f"}),
        ("g offset 1h unless on (kind) h", {"g", "h"}),
    ],
)
def test_metric_names_are_read_from_promql(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


def test_every_queried_metric_is_declared_by_the_worker() -> None:
    declared = _declared_samples() | PROMETHEUS_SYNTHETIC
    queried = [(title, name) for title, expr in dashboard_exprs() for name in metric_names(expr)]
    queried += [(rule["alert"], name) for rule in alert_rules() for name in metric_names(rule["expr"])]
    unknown = sorted({(where, name) for where, name in queried if name not in declared})
    assert not unknown, f"not exported by xnovu.metrics: {unknown}"


def test_configuration_error_series_exist_at_zero_before_the_first_error() -> None:
    """increase() over a counter series born at 1 is 0 (no earlier sample), so a worker's first 401/402/403 would go
    unseen until the next one 30 s later: the series exist from the start, at 0."""
    samples = {
        s.labels.get("status_code"): s.value
        for family in Metrics().registry.collect()
        if family.name == "xnovu_novu_requests"
        for s in family.samples
        if s.name == "xnovu_novu_requests_total"
    }
    assert samples == {"401": 0.0, "402": 0.0, "403": 0.0}


# --- dashboard ---------------------------------------------------------------------------------------------


def test_dashboard_has_a_panel_for_each_signal_operators_need() -> None:
    titles = [p["title"] for p in dashboard()["panels"]]
    for wanted in REQUIRED_PANELS:
        assert any(t.startswith(wanted) for t in titles), f"no panel {wanted!r} in {titles}"


def _selects_status(expr: str, status: int) -> bool:
    return any(
        re.fullmatch(value, str(status)) if op == "=~" else value == str(status)
        for op, value in _STATUS_MATCHER.findall(expr)
    )


def test_each_novu_configuration_error_has_its_panel_and_its_alert() -> None:
    """The worker holds every send on each of them (xnovu.errors.NOVU_CONFIG_STATUSES): none may go unseen."""
    for status in NOVU_CONFIG_STATUSES:
        panels = [title for title, expr in dashboard_exprs() if _selects_status(expr, status)]
        assert any(title.endswith(f"{status} (5 m)") for title in panels), (status, panels)
        rules = [rule["alert"] for rule in alert_rules() if _selects_status(rule["expr"], status)]
        assert len(rules) == 1, (status, rules)


def test_counting_stat_panels_show_zero_rather_than_no_data() -> None:
    for panel in dashboard()["panels"]:
        if panel["type"] == "stat" and panel["title"].startswith(ZERO_NOT_NO_DATA):
            for target in panel["targets"]:
                assert target["expr"].endswith(" or vector(0)"), (panel["title"], target["expr"])


def test_dashboard_is_importable_grafana_json() -> None:
    d = dashboard()
    assert d["uid"] == "xnovu" and d["title"] and isinstance(d["schemaVersion"], int)
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    variables = {v["name"]: v for v in d["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    for panel in d["panels"]:
        assert set(panel["gridPos"]) == {"x", "y", "w", "h"}
        assert 0 <= panel["gridPos"]["x"] and panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["targets"], f"panel {panel['title']!r} has no query"
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids))
        for target in panel["targets"]:
            assert target["expr"].count("(") == target["expr"].count(")"), target["expr"]


# --- alert rules -------------------------------------------------------------------------------------------


def test_alert_rules_have_the_prometheus_rule_file_structure() -> None:
    """The schema promtool enforces, checked without promtool (CI machines may not have it)."""
    data = alerts()
    assert set(data) == {"groups"}
    group_names = [g["name"] for g in data["groups"]]
    assert len(group_names) == len(set(group_names))
    allowed_rule_keys = {"alert", "expr", "for", "keep_firing_for", "labels", "annotations"}
    names = []
    for group in data["groups"]:
        assert set(group) <= {"name", "interval", "limit", "rules"}
        assert isinstance(group["rules"], list) and group["rules"]
        for rule in group["rules"]:
            assert set(rule) <= allowed_rule_keys, set(rule) - allowed_rule_keys
            assert re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", rule["alert"])
            assert isinstance(rule["expr"], str) and rule["expr"].strip()
            assert rule["expr"].count("(") == rule["expr"].count(")")
            if "for" in rule:
                assert DURATION.match(str(rule["for"])), rule["for"]
            labels: dict[str, Any] = rule.get("labels", {})
            assert labels.get("severity") in ("critical", "warning"), rule["alert"]
            assert all(isinstance(v, str) for v in labels.values())
            annotations: dict[str, Any] = rule["annotations"]
            assert {"summary", "description", "runbook"} <= set(annotations), rule["alert"]
            assert all(isinstance(v, str) for v in annotations.values())
            names.append(rule["alert"])
    assert len(names) == len(set(names))
    assert REQUIRED_ALERTS <= set(names)


def test_summaries_print_whole_numbers() -> None:
    """A value is formatted (printf "%.0f", humanize...), never printed raw: increase() and friends estimate."""
    for rule in alert_rules():
        for name, text in rule["annotations"].items():
            raw = re.findall(r"\{\{\s*\$value\s*\}\}", text)
            assert not raw, f"{rule['alert']} {name} prints $value unformatted: {text}"


def test_every_alert_is_shown_firing_by_the_promtool_unit_tests() -> None:
    cases = yaml.safe_load(ALERTS_TEST_PATH.read_text(encoding="utf-8"))
    assert cases["rule_files"] == [ALERTS_PATH.name]
    fired = {
        case["alertname"] for test in cases["tests"] for case in test.get("alert_rule_test", []) if case["exp_alerts"]
    }
    assert fired == {rule["alert"] for rule in alert_rules()}


def test_every_runbook_points_at_a_readme_section_that_exists() -> None:
    anchors = github_anchors(README_PATH.read_text(encoding="utf-8"))
    for rule in alert_rules():
        target = rule["annotations"]["runbook"]
        path, _, anchor = target.partition("#")
        assert path == "README.md" and anchor, target
        assert anchor in anchors, f"{rule['alert']}: README.md has no section #{anchor}"


def test_prometheus_config_scrapes_workers_and_loads_the_rules() -> None:
    config = yaml.safe_load(PROMETHEUS_PATH.read_text(encoding="utf-8"))
    assert config["rule_files"] == ["alerts.yml"]
    [job] = config["scrape_configs"]
    assert re.fullmatch(r"xnovu.*", job["job_name"])  # the rules select up{job=~"xnovu.*"}
    assert job["dns_sd_configs"][0]["names"] == ["worker"] and job["dns_sd_configs"][0]["port"] == 3001


def test_grafana_provisioning_points_at_prometheus_and_the_dashboard() -> None:
    provisioning = ROOT / "ops" / "grafana" / "provisioning"
    datasources = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text(encoding="utf-8"))
    [ds] = datasources["datasources"]
    assert ds["type"] == "prometheus" and ds["uid"] == "prometheus" and ds["url"] == "http://prometheus:9090"
    assert dashboard()["templating"]["list"][0]["current"]["value"] == ds["uid"]
    providers = yaml.safe_load((provisioning / "dashboards" / "xnovu.yml").read_text(encoding="utf-8"))
    assert providers["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"


PROMTOOL = shutil.which("promtool")


@pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed (apt-get install prometheus)")
def test_promtool_accepts_the_rules_and_the_config_and_the_rules_pass_their_unit_tests() -> None:
    """ops/prometheus/alerts_test.yml: each alert fires when it should, with the summary an operator reads."""
    assert PROMTOOL is not None
    for args in (
        ["check", "rules", str(ALERTS_PATH)],
        ["check", "config", str(PROMETHEUS_PATH)],
        ["test", "rules", str(ALERTS_TEST_PATH)],
    ):
        result = subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stdout + result.stderr
