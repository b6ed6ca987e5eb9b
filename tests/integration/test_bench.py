"""`xnovu bench --quick` end to end on the local stack (slow: minutes of CPU); the pure parts are unit-tested in
tests/unit/test_bench_plan.py."""

from __future__ import annotations

import io
import json

import pytest
from rich.console import Console

from tests.unit.test_bench_plan import JSON_KEYS
from xnovu.config import Settings
from xnovu.devtools.bench.phases import run_bench


@pytest.mark.slow
@pytest.mark.timeout(900)
async def test_quick_bench_runs_end_to_end_and_prints_one_json_object() -> None:
    buf = io.StringIO()
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    result = await run_bench(settings, quick=True, as_json=True, console=Console(file=buf))
    printed = json.loads(buf.getvalue())
    assert printed == result.as_dict()
    assert set(printed) == JSON_KEYS
    assert result.ceiling_per_s > 0 and result.e2e_per_s > 0 and result.backlog_per_s > 0
    assert result.recipients_per_s > result.e2e_per_s  # 100 recipients per row ride in one bulk request
    assert 0 < result.latency_p50_s <= result.latency_p99_s
    assert 0 <= result.schedule_error_p50_s <= result.schedule_error_p99_s
    assert result.rss_mb > 10
    assert 0 < result.wakeup_latency_p50_s <= result.wakeup_latency_p99_s
    assert result.wakeup_runs_per_1000_commits > 0
    assert result.fanout_per_s > 0 and result.fanout_ratio == pytest.approx(result.e2e_per_s / result.fanout_per_s)
    assert result.ceiling_worker_cpu_ms_per_workflow > 0 and result.worker_cpu_ms_per_notification > 0
    assert result.temporal_cpu_ms_per_notification > 0 and result.postgres_cpu_ms_per_notification > 0
    assert result.db_round_trips_per_notification >= 3  # acquire, record_outcomes, finalize + the claims
    # Each child: started (+ the parent's initiated), one local activity, close; its visibility: start and close.
    assert result.actions_per_fanout_item >= 3 and result.actions_per_notification >= 3
    assert result.visibility_updates_per_fanout_item >= 2 and result.visibility_updates_per_notification >= 2
    assert result.history_events_per_notification > 0 and result.history_events_per_fanout_item > 0
    assert 0 < result.listener_killed_latency_p50_s <= result.listener_killed_latency_p99_s
    assert result.rss_backlog_mb > 10
    assert 0 < result.noisy_b_urgent_p50_s <= result.noisy_b_urgent_p99_s
    assert 0 < result.noisy_oldest_first_b_normal_p50_s <= result.noisy_oldest_first_b_normal_p99_s
    assert result.noisy_a_alone_drain_s > 0 and result.noisy_a_drain_ratio > 0
