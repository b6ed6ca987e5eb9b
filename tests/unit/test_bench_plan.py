"""`xnovu bench`'s plan and rendering (xnovu/devtools/bench/plan.py, render.py): the arithmetic behind its figures
and verdicts, and what it prints. The run itself is tests/integration/test_bench.py (slow)."""

from __future__ import annotations

import io
import json
from dataclasses import replace

import pytest
from rich.console import Console

from xnovu.devtools.bench.cost import Persistence, RunCost, count_actions, count_visibility_updates, is_write
from xnovu.devtools.bench.plan import (
    NOISY_ISSUE,
    NOISY_SCALED,
    QUICK,
    BenchResult,
    NoisyPlan,
    evaluate_targets,
    fair_share_s,
    per_item,
    percentile,
)
from xnovu.devtools.bench.render import result_json, results_table

NOISY_KEYS = {
    "noisy_b_urgent_p50_s",
    "noisy_b_urgent_p99_s",
    "noisy_b_normal_p50_s",
    "noisy_b_normal_p99_s",
    "noisy_b_fair_share_s",
    "noisy_a_drain_s",
    "noisy_a_alone_drain_s",
    "noisy_a_drain_ratio",
    "noisy_oldest_first_b_urgent_p50_s",
    "noisy_oldest_first_b_urgent_p99_s",
    "noisy_oldest_first_b_normal_p50_s",
    "noisy_oldest_first_b_normal_p99_s",
    "noisy_oldest_first_a_drain_s",
    "noisy_oldest_first_a_drain_ratio",
}
TRICKLE_KEYS = {"trickle_idle_runs_per_day", "trickle_idle_actions_per_day"} | {
    f"trickle_{variant}{rate}_{figure}"
    for variant in ("", "nolinger_")
    for rate in ("per_min", "1_per_s", "4_per_s", "20_per_s", "burst")
    for figure in ("actions_per_notification", "p50_s")
}
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
    "fanout_per_s",
    "fanout_ratio",
    "ceiling_worker_cpu_ms_per_workflow",
    "fanout_worker_cpu_ms_per_item",
    "worker_cpu_ms_per_notification",
    "backlog_worker_cpu_ms_per_notification",
    "temporal_cpu_ms_per_ceiling_workflow",
    "temporal_cpu_ms_per_fanout_item",
    "temporal_cpu_ms_per_notification",
    "backlog_temporal_cpu_ms_per_notification",
    "postgres_cpu_ms_per_notification",
    "backlog_postgres_cpu_ms_per_notification",
    "db_round_trips_per_notification",
    "history_events_per_notification",
    "visibility_updates_per_notification",
    "actions_per_notification",
    "history_events_per_fanout_item",
    "visibility_updates_per_fanout_item",
    "actions_per_fanout_item",
    "listener_killed_latency_p50_s",
    "listener_killed_latency_p99_s",
    "ceiling_client_cpu_ms_per_workflow",
    "server_writes_per_ceiling_workflow",
    "server_writes_per_fanout_item",
    "server_writes_per_notification",
    "server_db_ms_per_ceiling_workflow",
    "server_db_ms_per_fanout_item",
    "server_db_ms_per_notification",
    "rss_backlog_mb",
    *NOISY_KEYS,
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
    fanout_per_s=84.0,
    fanout_ratio=0.95,
    ceiling_worker_cpu_ms_per_workflow=4.0,
    worker_cpu_ms_per_notification=4.0,
    backlog_worker_cpu_ms_per_notification=4.0,
    db_round_trips_per_notification=3.0,
    listener_killed_latency_p50_s=1.0,
    listener_killed_latency_p99_s=11.0,
    rss_backlog_mb=200.0,
    noisy_b_urgent_p99_s=2.0,
    noisy_b_normal_p99_s=3.0,
    noisy_b_fair_share_s=3.0,
    noisy_a_drain_s=105.0,
    noisy_a_alone_drain_s=100.0,
    noisy_a_drain_ratio=1.05,
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
        "fanout_ratio",
        "worker_cpu_ms_per_notification",
        "backlog_worker_cpu_ms_per_notification",
        "db_round_trips_per_notification",
        "listener_killed_latency_p99_s",
        "rss_backlog_mb",
        "noisy_b_urgent_p99_s",
        "noisy_b_normal_p99_s",
        "noisy_a_drain_ratio",
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
        ({"fanout_ratio": 0.949}, "fanout_ratio"),
        ({"worker_cpu_ms_per_notification": 4.01}, "worker_cpu_ms_per_notification"),  # > the ceiling worker's
        ({"backlog_worker_cpu_ms_per_notification": 4.01}, "backlog_worker_cpu_ms_per_notification"),
        ({"db_round_trips_per_notification": 3.01}, "db_round_trips_per_notification"),
        ({"listener_killed_latency_p99_s": 11.01}, "listener_killed_latency_p99_s"),  # > 10 s interval + 1 s
        ({"rss_backlog_mb": 200.1}, "rss_backlog_mb"),
        ({"noisy_b_urgent_p99_s": 2.01}, "noisy_b_urgent_p99_s"),
        ({"noisy_b_normal_p99_s": 3.01}, "noisy_b_normal_p99_s"),  # > B's fair share of the same run
        ({"noisy_a_drain_ratio": 1.051}, "noisy_a_drain_ratio"),
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
    assert set(ON_TARGET.as_dict()) == JSON_KEYS | TRICKLE_KEYS
    # The trickle phase runs only alone (`--only trickle`): a full run leaves its figures out.
    assert json.loads(result_json(ON_TARGET)) == {k: v for k, v in ON_TARGET.as_dict().items() if k in JSON_KEYS}


def test_table_shows_every_figure_with_pass_or_miss() -> None:
    buf = io.StringIO()
    Console(file=buf, width=200).print(results_table(replace(ON_TARGET, rss_mb=250.0), QUICK, quick=True))
    text = buf.getvalue()
    for key in JSON_KEYS:
        assert key in text
    assert text.count("pass") == len(evaluate_targets(ON_TARGET)) - 1
    assert text.count("miss") == 1
    assert "4 ms" in text  # CPU per item is shown in milliseconds


def test_worker_cpu_target_follows_the_ceiling_worker_of_the_same_run() -> None:
    cheap_ceiling = replace(ON_TARGET, ceiling_worker_cpu_ms_per_workflow=2.0)
    missed = [c.metric for c in evaluate_targets(cheap_ceiling) if not c.passed]
    assert missed == ["worker_cpu_ms_per_notification", "backlog_worker_cpu_ms_per_notification"]


# -- cost per item ---------------------------------------------------------------------------------------------


def test_per_item_divides_and_reports_zero_for_no_items() -> None:
    assert per_item(6000.0, 2000) == 3.0
    assert per_item(12.5, 0) == 0.0


START = "EVENT_TYPE_WORKFLOW_EXECUTION_STARTED"
WFT = ["EVENT_TYPE_WORKFLOW_TASK_SCHEDULED", "EVENT_TYPE_WORKFLOW_TASK_STARTED", "EVENT_TYPE_WORKFLOW_TASK_COMPLETED"]
MARKER = "EVENT_TYPE_MARKER_RECORDED"
COMPLETED = "EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED"
#: NotificationTriggerWorkflow / BenchCeilingWorkflow with one local activity: the marker goes with the 2nd task.
ONE_LOCAL_ACTIVITY = [START, *WFT, *WFT, MARKER, COMPLETED]


def test_a_workflow_with_one_local_activity_costs_two_actions_and_two_visibility_writes() -> None:
    """Started (1) + the local activities of one workflow task (1); visibility: start and close."""
    assert count_actions(ONE_LOCAL_ACTIVITY) == 2
    assert count_visibility_updates(ONE_LOCAL_ACTIVITY) == 2


def test_local_activities_of_one_workflow_task_count_once_and_of_two_tasks_twice() -> None:
    same_task = [START, *WFT, MARKER, MARKER, MARKER, COMPLETED]
    two_tasks = [START, *WFT, MARKER, *WFT, MARKER, COMPLETED]
    assert count_actions(same_task) == 2
    assert count_actions(two_tasks) == 3


def test_a_scheduled_poll_run_that_continues_as_new_after_starting_children() -> None:
    """Schedule (2) + started (1) + activity (1) + per child initiated (1); the child's own start is in its history.
    Visibility: start, continue-as-new close and each upsert."""
    run = [
        START,
        *WFT,
        "EVENT_TYPE_ACTIVITY_TASK_SCHEDULED",
        "EVENT_TYPE_ACTIVITY_TASK_STARTED",
        "EVENT_TYPE_ACTIVITY_TASK_COMPLETED",
        *WFT,
        "EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_INITIATED",
        "EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_INITIATED",
        *WFT,
        "EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_STARTED",
        "EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_STARTED",
        "EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES",
        "EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW",
    ]
    assert count_actions(run, scheduled=True) == 2 + 1 + 1 + 2 + 1
    assert count_actions(run) == 1 + 1 + 2 + 1  # the next run, started by continue-as-new: no schedule actions
    assert count_visibility_updates(run) == 3


def test_timers_signals_and_memo_changes() -> None:
    run = [START, *WFT, "EVENT_TYPE_TIMER_STARTED", "EVENT_TYPE_TIMER_FIRED", "EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED"]
    run += [*WFT, "EVENT_TYPE_WORKFLOW_PROPERTIES_MODIFIED", "EVENT_TYPE_WORKFLOW_EXECUTION_TERMINATED"]
    assert count_actions(run) == 3  # started, timer, signal; a memo change is not an action
    assert count_visibility_updates(run) == 3  # start, memo change, close


def test_run_cost_sums_runs() -> None:
    cost = RunCost()
    cost.add(ONE_LOCAL_ACTIVITY)
    cost.add(ONE_LOCAL_ACTIVITY, scheduled=True)
    assert cost == RunCost(runs=2, history_events=2 * len(ONE_LOCAL_ACTIVITY), visibility_updates=4, actions=6)


# -- the Temporal server's persistence writes --------------------------------------------------------------------


def test_persistence_counts_writes_by_operation_between_two_snapshots() -> None:
    def snapshot(create: float, update: float, read: float, seconds: float) -> Persistence:
        return Persistence.parse(
            [
                ("persistence_requests", {"operation": "CreateWorkflowExecution", "service_name": "history"}, create),
                ("persistence_requests", {"operation": "UpdateWorkflowExecution", "service_name": "history"}, update),
                ("persistence_requests", {"operation": "GetWorkflowExecution", "service_name": "history"}, read),
                ("persistence_latency_sum", {"operation": "UpdateWorkflowExecution"}, seconds),
                ("persistence_latency_count", {"operation": "UpdateWorkflowExecution"}, update),
                ("persistence_requests", {"service_name": "history"}, 99.0),  # no operation: not a persistence call
            ]
        )

    used = snapshot(11, 40, 500, 2.5).since(snapshot(1, 20, 100, 0.5))
    assert used.writes == 30, "creates and updates write; reads do not"
    assert used.busy_s == 2.0
    assert per_item(used.writes, 10) == 3.0


def test_write_operations_are_told_from_reads() -> None:
    writes = [
        "CreateWorkflowExecution",
        "UpdateWorkflowExecution",
        "CreateTasks",
        "RangeCompleteHistoryTasks",
        "ConflictResolveWorkflowExecution",
        "DeleteWorkflowExecution",
        "UpdateShard",
        "AppendHistoryNodes",
    ]
    reads = [
        "GetWorkflowExecution",
        "ReadHistoryBranch",
        "GetNamespace",
        "GetTasks",
        "ListNamespaces",
        "GetCurrentExecution",
        "GetTransferTasks",
        "AssertShardOwnership",
    ]
    assert all(is_write(op) for op in writes)
    assert not any(is_write(op) for op in reads)


# -- noisy neighbour -----------------------------------------------------------------------------------------------


def test_b_fair_share_is_its_rows_at_half_the_budget_plus_a_poll_and_one_turn_of_a() -> None:
    from xnovu.devtools.bench.plan import BUDGET_TURN_TOKENS
    from xnovu.novu.fairqueue import LARGEST_REQUEST

    assert BUDGET_TURN_TOKENS == LARGEST_REQUEST
    # 20 tokens at 30 tokens/s, a 1 s poll, and A's bulk request of 100 tokens at 60 tokens/s.
    assert fair_share_s(NoisyPlan(b_normal=20, rps=60.0), 1.0) == pytest.approx(20 / 30 + 1 + 100 / 60)


def test_the_scaled_noisy_phase_keeps_the_issue_rate_and_b_and_scales_a() -> None:
    assert (NOISY_SCALED.rps, NOISY_SCALED.b_urgent, NOISY_SCALED.b_normal) == (60.0, 20, 20)
    assert (NOISY_ISSUE.a_rows, NOISY_ISSUE.a_big_recipients) == (20_000, 50_000)
    assert NOISY_ISSUE.a_tokens == 70_000 and NOISY_SCALED.a_tokens == 7_000  # ~20 min against ~2 min at 60/s


def test_noisy_targets_apply_only_when_the_phase_ran() -> None:
    assert not {c.metric for c in evaluate_targets(replace(ON_TARGET, noisy_a_alone_drain_s=0.0))} & NOISY_KEYS


def test_only_noisy_shows_the_noisy_figures_and_their_targets() -> None:
    only = BenchResult(**{k: (getattr(ON_TARGET, k) if k.startswith("noisy_") else 0.0) for k in JSON_KEYS})
    assert set(json.loads(result_json(only, only="noisy"))) == NOISY_KEYS
    assert [c.metric for c in evaluate_targets(only)] == [
        "noisy_b_urgent_p99_s",
        "noisy_b_normal_p99_s",
        "noisy_a_drain_ratio",
    ]
    buf = io.StringIO()
    Console(file=buf, width=200).print(results_table(only, QUICK, quick=True, only="noisy"))
    text = buf.getvalue()
    assert "noisy_oldest_first_a_drain_s" in text and "latency_p50_s" not in text and text.count("pass") == 3


def _trickle(**figures: float) -> BenchResult:
    base = {k: 0.0 for k in JSON_KEYS | TRICKLE_KEYS} | {"trickle_idle_actions_per_day": 57_600.0}
    before = {k: 8.0 for k in TRICKLE_KEYS if k.startswith("trickle_nolinger_") and k.endswith("_notification")}
    after = {k.replace("nolinger_", ""): 7.0 for k in before} | {"trickle_4_per_s_actions_per_notification": 4.5}
    return BenchResult(**(base | before | after | {"trickle_4_per_s_p50_s": 0.5} | figures))


def test_only_trickle_shows_the_trickle_figures_and_their_targets() -> None:
    only = _trickle()
    assert set(json.loads(result_json(only, only="trickle"))) == TRICKLE_KEYS
    checks = evaluate_targets(only)
    assert [c.metric for c in checks][:2] == ["trickle_4_per_s_actions_per_notification", "trickle_4_per_s_p50_s"]
    assert len(checks) == 6 and all(c.passed for c in checks)
    buf = io.StringIO()
    Console(file=buf, width=200).print(results_table(only, QUICK, quick=True, only="trickle"))
    assert buf.getvalue().count("pass") == 6 and "noisy_" not in buf.getvalue()


@pytest.mark.parametrize(
    ("change", "missed"),
    [
        ({"trickle_4_per_s_actions_per_notification": 4.51}, "trickle_4_per_s_actions_per_notification"),
        ({"trickle_4_per_s_p50_s": 0.51}, "trickle_4_per_s_p50_s"),
        ({"trickle_per_min_actions_per_notification": 8.01}, "trickle_per_min_actions_per_notification"),
        ({"trickle_burst_actions_per_notification": 8.01}, "trickle_burst_actions_per_notification"),
    ],
)
def test_each_trickle_target_misses_just_past_its_limit(change: dict[str, float], missed: str) -> None:
    assert [c.metric for c in evaluate_targets(_trickle(**change)) if not c.passed] == [missed]


def test_trickle_targets_apply_only_when_the_phase_ran() -> None:
    assert not {c.metric for c in evaluate_targets(ON_TARGET)} & TRICKLE_KEYS
