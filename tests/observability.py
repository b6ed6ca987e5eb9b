"""Reading the observability files: metric names in PromQL, the dashboard's and the alerts' queries, README anchors."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD_PATH = ROOT / "ops" / "grafana" / "xnovu.json"
ALERTS_PATH = ROOT / "ops" / "prometheus" / "alerts.yml"
ALERTS_TEST_PATH = ROOT / "ops" / "prometheus" / "alerts_test.yml"
PROMETHEUS_PATH = ROOT / "ops" / "prometheus" / "prometheus.yml"
README_PATH = ROOT / "README.md"

#: Series Prometheus makes itself for every scrape target (not exported by /metrics).
PROMETHEUS_SYNTHETIC = frozenset({"up", "scrape_duration_seconds", "scrape_samples_scraped"})

_PROMQL_WORDS = frozenset(
    {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless", "offset", "inf",
     "nan"}
)
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_MATCHERS = re.compile(r"\{[^}]*\}")
_RANGE = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENT = re.compile(r"(?<![\w.$])([A-Za-z_:][A-Za-z0-9_:]*)(?![A-Za-z0-9_:]|\s*\()")


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (functions, keywords, labels and strings removed)."""
    text = _STRING.sub('""', expr)
    text = _MATCHERS.sub(" ", text)
    text = _RANGE.sub(" ", text)
    text = _GROUPING.sub(" ", text)
    return {name for name in _IDENT.findall(text) if name.lower() not in _PROMQL_WORDS}


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD_PATH.read_text(encoding="utf-8"))
    return data


def dashboard_exprs() -> list[tuple[str, str]]:
    """(panel title, expr) for every query of every panel (rows' nested panels included)."""
    out: list[tuple[str, str]] = []

    def walk(panels: list[dict[str, Any]]) -> None:
        for panel in panels:
            for target in panel.get("targets", []):
                out.append((panel["title"], target["expr"]))
            walk(panel.get("panels", []))

    walk(dashboard()["panels"])
    return out


def alerts() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(ALERTS_PATH.read_text(encoding="utf-8"))
    return data


def alert_rules() -> list[dict[str, Any]]:
    return [rule for group in alerts()["groups"] for rule in group["rules"]]


def github_anchors(markdown: str) -> set[str]:
    """The anchors GitHub gives the headings of a Markdown file (lower case, punctuation dropped, spaces to -)."""
    anchors: set[str] = set()
    in_code = False
    for line in markdown.splitlines():
        if line.startswith("```"):
            in_code = not in_code
        if in_code:
            continue
        match = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if match:
            text = re.sub(r"`", "", match.group(1)).strip().lower()
            slug = re.sub(r"[^\w\- ]", "", text).replace(" ", "-")
            anchors.add(slug)
    return anchors
