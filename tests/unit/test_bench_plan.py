"""`xnovu bench`'s plan and rendering (xnovu/devtools/bench/plan.py, render.py): the arithmetic behind its figures
and verdicts, and what it prints. The run itself is tests/integration/test_bench.py (slow)."""

from __future__ import annotations

import io
import json
from dataclasses import replace

import pytest
from rich.console import Console

from xnovu.devtools.bench.plan import QUICK, BenchResult, evaluate_targets, percentile
from xnovu.devtools.bench.render import result_json, results_table

JSON_KEYS = {
    "ceiling_per_s",
    "e2e_per_s",
    "throughput_ratio",
    "recipients_per_s",
    "latency_p50_s",
    "latency_p99_s",
    "schedule_error_p50_s",
    "schedule_error_p99_s",
    "backlog_per_s",
    "rss_mb",
    "heavy_recipients_per_s",
    "limited_send_s",
    "limited_floor_s",
    "wakeup_latency_p50_s",
    "wakeup_latency_p99_s",
    "wakeup_runs_per_1000_commits",
}

#: Every figure exactly on its target: each rule is inclusive, so this passes everything.
ON_TARGET = BenchResult(
    ceiling_per_s=100.0,
    e2e_per_s=80.0,
    throughput_ratio=0.8,
    recipients_per_s=4000.0,
    latency_p50_s=1.5,
    latency_p99_s=3.0,
    schedule_error_p50_s=0.1,
    schedule_error_p99_s=1.0,
    backlog_per_s=80.0,
    rss_mb=200.0,
    heavy_recipients_per_s=3000.0,
    limited_send_s=165.0,
    limited_floor_s=150.0,
    wakeup_latency_p50_s=0.25,
    wakeup_latency_p99_s=1.0,
    wakeup_runs_per_1000_commits=5.0,
)


# -- percentile ----------------------------------------------------------------------------------------------


def test_percentile_is_nearest_rank_on_the_sorted_values() -> None:
    values = [float(v) for v in range(100, 0, -1)]  # 100..1, unsorted on purpose
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 100) == 100.0
    assert percentile(values, 1) == 1.0


def test_percentile_of_a_small_sample_is_an_observed_value() -> None:
    samples = [0.9, 0.2, 1.4, 0.5]
    assert percentile(samples, 50) == 0.5  # rank ceil(0.5 * 4) = 2
    assert percentile(samples, 99) == 1.4  # fewer than 100 samples: p99 is the maximum
    assert percentile([0.7], 99) == 0.7
    assert percentile(samples, 0) == 0.2


def test_percentile_rejects_empty_input_and_out_of_range_p() -> None:
    with pytest.raises(ValueError, match="empty"):
        percentile([], 50)
    with pytest.raises(ValueError, match=r"0\.\.100"):
        percentile([1.0], 101)


# -- targets ---------------------------------------------------------------------------------------------------


def test_figures_exactly_on_target_pass() -> None:
    checks = evaluate_targets(ON_TARGET)
    assert [c.metric for c in checks if not c.passed] == []
    assert {c.metric for c in checks} == {
        "throughput_ratio",
        "recipients_per_s",
        "latency_p50_s",
        "latency_p99_s",
        "schedule_error_p99_s",
        "backlog_per_s",
        "rss_mb",
        "limited_send_s",
        "wakeup_latency_p50_s",
        "wakeup_latency_p99_s",
        "wakeup_runs_per_1000_commits",
    }


@pytest.mark.parametrize(
    ("change", "missed"),
    [
        ({"throughput_ratio": 0.79}, "throughput_ratio"),
        ({"recipients_per_s": 3999.0}, "recipients_per_s"),  # < 50 x e2e_per_s (80)
        ({"latency_p50_s": 1.51}, "latency_p50_s"),
        ({"latency_p99_s": 3.01}, "latency_p99_s"),
        ({"schedule_error_p99_s": 1.01}, "schedule_error_p99_s"),
        ({"backlog_per_s": 79.9}, "backlog_per_s"),  # < 0.8 x ceiling (100)
        ({"rss_mb": 200.1}, "rss_mb"),
        ({"limited_send_s": 165.1}, "limited_send_s"),  # > 1.1 x floor (150 s)
        ({"wakeup_latency_p50_s": 0.251}, "wakeup_latency_p50_s"),
        ({"wakeup_latency_p99_s": 1.01}, "wakeup_latency_p99_s"),
        ({"wakeup_runs_per_1000_commits": 5.1}, "wakeup_runs_per_1000_commits"),
    ],
)
def test_each_target_misses_just_past_its_limit(change: dict[str, float], missed: str) -> None:
    checks = evaluate_targets(replace(ON_TARGET, **change))
    assert [c.metric for c in checks if not c.passed] == [missed]


def test_relative_targets_follow_the_ceiling_and_e2e_of_the_same_run() -> None:
    """The same backlog rate passes on a slow machine and misses on a fast one: targets are relative."""
    slow = replace(ON_TARGET, ceiling_per_s=50.0, backlog_per_s=45.0)
    fast = replace(ON_TARGET, ceiling_per_s=500.0, backlog_per_s=45.0)
    assert next(c for c in evaluate_targets(slow) if c.metric == "backlog_per_s").passed
    assert not next(c for c in evaluate_targets(fast) if c.metric == "backlog_per_s").passed


def test_json_object_has_exactly_the_documented_keys() -> None:
    assert set(ON_TARGET.as_dict()) == JSON_KEYS
    assert json.loads(result_json(ON_TARGET)) == ON_TARGET.as_dict()


def test_table_shows_every_figure_with_pass_or_miss() -> None:
    buf = io.StringIO()
    Console(file=buf, width=200).print(results_table(replace(ON_TARGET, rss_mb=250.0), QUICK, quick=True))
    text = buf.getvalue()
    for key in JSON_KEYS:
        assert key in text
    assert text.count("pass") == 10
    assert text.count("miss") == 1
