"""What `xnovu bench` measures and what it must reach: the plan of a run, the figures, the targets, percentiles.

Pure (no I/O, no stack, no terminal), so that the arithmetic the README's performance figures rest on is unit-tested
(tests/unit/test_bench_plan.py). docs/performance.md describes the method.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

#: Tokens of A's request under way at the token budget when B's first request arrives, at most one bulk request:
#: xnovu.novu.fairqueue.LARGEST_REQUEST (this module imports no other xnovu module; tests/unit/test_bench_plan.py
#: keeps the two equal).
BUDGET_TURN_TOKENS = 100.0


@dataclass(frozen=True)
class NoisyPlan:
    """Sizes of the noisy-neighbour phase (issue 17, docs/performance.md "Noisy neighbour"): enterprise A commits
    `a_rows` single-recipient rows and one row of `a_big_recipients`; `b_after_s` later enterprise B commits
    `b_urgent` rows at the highest priority and `b_normal` at normal priority; all at `rps` tokens/s. The issue's
    sizes (NOISY_ISSUE) drain A in about 20 minutes per mode; the bench runs a scaled version by default."""

    a_rows: int = 2_000
    a_big_recipients: int = 5_000
    b_urgent: int = 20
    b_normal: int = 20
    rps: float = 60.0
    b_after_s: float = 10.0

    @property
    def a_tokens(self) -> int:
        """What A's backlog costs: one token per single row, 100 per bulk request of up to 100 recipients."""
        return self.a_rows + 100 * math.ceil(self.a_big_recipients / 100)


#: The sort_order of B's urgent rows: urgency 2 under the default rule, Temporal's priority key 1 (the highest).
NOISY_HIGHEST_SORT_ORDER = 2
NOISY_SCALED = NoisyPlan()
NOISY_QUICK = NoisyPlan(a_rows=500, a_big_recipients=1_000, b_after_s=5.0)
NOISY_ISSUE = NoisyPlan(a_rows=20_000, a_big_recipients=50_000)


@dataclass(frozen=True)
class TrickleRate:
    """One arrival rate of the trickle phase: `commits` single-row commits, one every `gap_s` (0: back to back)."""

    name: str
    gap_s: float
    commits: int


@dataclass(frozen=True)
class TricklePlan:
    """Sizes of the trickle phase (issue 18, docs/performance.md "Cost at any arrival rate"): single-row commits at
    each rate, with wake-ups on and the default 10 s interval, measured once with today's behaviour (no linger) and
    once with the worker's settings."""

    rates: tuple[TrickleRate, ...] = (
        TrickleRate("per_min", 60.0, 3),
        TrickleRate("1_per_s", 1.0, 20),
        TrickleRate("4_per_s", 0.25, 60),
        TrickleRate("20_per_s", 0.05, 100),
        TrickleRate("burst", 0.0, 100),
    )


TRICKLE_QUICK = TricklePlan(
    rates=(
        TrickleRate("per_min", 60.0, 2),
        TrickleRate("1_per_s", 1.0, 10),
        TrickleRate("4_per_s", 0.25, 40),
        TrickleRate("20_per_s", 0.05, 60),
        TrickleRate("burst", 0.0, 60),
    )
)


@dataclass(frozen=True)
class BenchPlan:
    """Sizes of one run; `QUICK` finishes in a minute or two, `FULL` in under ten minutes on 2 cores."""

    ceiling_n: int
    """Ceiling workflows (and, for a like-for-like ratio, the same number of e2e rows)."""
    e2e_n: int
    recipient_rows: int
    """Rows of `recipients_per_row` each: enough that the 0-1 s wait for the next poll tick does not dominate (with
    10 rows the phase lasts about a second and half of it is that wait, so the figure measures the tick, not the
    per-recipient cost)."""
    recipients_per_row: int
    latency_samples: int
    scheduled_rows: int
    backlog_n: int
    heavy_recipients: int = 10_000
    """Recipients of the one heavy row sent at the emulator's unlimited rate."""
    limited_recipients: int = 1_500
    """Recipients of the one row sent on a budget of LIMITED_RPS tokens/s (floor: limited_recipients / LIMITED_RPS)."""
    wakeup_commits: int = 1000
    """Rows inserted one commit each while wake-ups are on: how many poll runs do they start? (Runs do not grow
    with the number of commits but with how long they keep coming, so the figure is taken at the issue's 1 000.)"""
    start_concurrency: int = 50
    """Ceiling starts in flight at once: enough to keep the server busy without queueing thousands of RPCs."""
    warmup: int = 20
    """Workflows / rows run before each measurement so that imports, caches and connections are warm."""
    listener_kill_samples: int = 10
    """Rows committed right after the wake-up LISTEN connection was killed: how long is delivery without it?"""
    backlog_rss_rows: int = 100_000
    """Rows waiting in the table while the worker's memory is sampled (the last phase; its unsent rows are deleted)."""
    backlog_rss_s: float = 60.0
    """How long the worker works on that backlog while its RSS is sampled."""
    noisy: NoisyPlan = field(default_factory=NoisyPlan)
    trickle: TricklePlan = field(default_factory=TricklePlan)
    """The noisy-neighbour phase (three runs: A alone, then A and B in each send order)."""


QUICK = BenchPlan(
    ceiling_n=200,
    e2e_n=200,
    recipient_rows=50,
    recipients_per_row=100,
    latency_samples=10,
    scheduled_rows=10,
    backlog_n=1000,
    heavy_recipients=2_000,
    limited_recipients=300,
    listener_kill_samples=3,
    backlog_rss_rows=5_000,
    backlog_rss_s=20.0,
    noisy=NOISY_QUICK,
    trickle=TRICKLE_QUICK,
)
FULL = BenchPlan(
    ceiling_n=2000,
    e2e_n=2000,
    recipient_rows=100,
    recipients_per_row=100,
    latency_samples=30,
    scheduled_rows=20,
    backlog_n=10_000,
)

#: Token budget of the rate-limited heavy phase (a bulk of 100 recipients costs 100 tokens, so 10 recipients/s).
LIMITED_RPS = 10.0
#: Poll interval of all three schedules during the bench (the issue's "1 s poll").
POLL_INTERVAL_MS = 1000
#: xnovu-poll-new's interval in the wake-up phase: the default, so only a wake-up makes delivery fast.
WAKEUP_POLL_INTERVAL_MS = 10_000
#: Scheduled rows are due this far ahead (seconds, uniform), so each one goes through the look-ahead and a timer.
SCHEDULE_AHEAD_S = (5.0, 15.0)
#: A phase that makes no progress for this long has failed (a stuck worker, a dead server): say so, do not hang.
STALL_S = 60.0
#: Whatever happens, a phase ends after `PHASE_BASE_S + rows / PHASE_MIN_RATE` seconds.
PHASE_BASE_S = 120.0
PHASE_MIN_RATE = 5.0
#: How often the bench looks at Postgres / Temporal visibility / the emulator while it waits.
WAIT_POLL_S = 0.25
EVENT_POLL_S = 0.05
RSS_SAMPLE_S = 0.25
BENCH_WORKFLOW_KEY = "xnovu-bench"
#: Rows per transaction when the bench inserts a large backlog: a few large commits, not one huge one.
BACKLOG_INSERT_CHUNK = 25_000
#: The no-op fan-out ceiling: items per parent run (then continue-as-new) and child starts in flight, as the poll
#: (`xnovu.temporal.workflows`: one claim batch of 100 per run, START_WINDOW = 100).
FANOUT_BATCH = 100
FANOUT_WINDOW = 100
#: Above this share of the machine's CPU used by other processes, the run is flagged as noisy.
BUSY_HOST_PERCENT = 10.0


@dataclass(frozen=True)
class BenchResult:
    """The figures of one run; `as_dict()` is the `--json` object."""

    ceiling_per_s: float
    e2e_per_s: float
    throughput_ratio: float
    recipients_per_s: float
    latency_p50_s: float
    latency_p99_s: float
    schedule_error_p50_s: float
    schedule_error_p99_s: float
    backlog_per_s: float
    rss_mb: float
    heavy_recipients_per_s: float = 0.0
    """One row with `heavy_recipients` recipients, commit → SENT, at the emulator's unlimited rate."""
    limited_send_s: float = 0.0
    """One row with `limited_recipients` recipients on a budget of LIMITED_RPS tokens/s, commit → SENT."""
    limited_floor_s: float = 0.0
    """What the budget allows at best for that row: recipients / LIMITED_RPS."""
    wakeup_latency_p50_s: float = 0.0
    wakeup_latency_p99_s: float = 0.0
    wakeup_runs_per_1000_commits: float = 0.0
    """xnovu-poll-new runs started by wake-ups while the rows were committed and sent (ticks held off)."""
    fanout_per_s: float = 0.0
    """The no-op fan-out of the poll's shape: parent runs of 100 child starts each, continue-as-new between them."""
    fanout_ratio: float = 0.0
    """e2e_per_s / fanout_per_s: how close the pipeline gets to its own shape done with no work."""
    ceiling_worker_cpu_ms_per_workflow: float = 0.0
    fanout_worker_cpu_ms_per_item: float = 0.0
    worker_cpu_ms_per_notification: float = 0.0
    """xnovu worker CPU (user + system) during the e2e phase, per row."""
    backlog_worker_cpu_ms_per_notification: float = 0.0
    temporal_cpu_ms_per_ceiling_workflow: float = 0.0
    """Temporal server CPU per item; 0 when the server is not one the bench started (TEMPORAL_ADDRESS set)."""
    temporal_cpu_ms_per_fanout_item: float = 0.0
    temporal_cpu_ms_per_notification: float = 0.0
    backlog_temporal_cpu_ms_per_notification: float = 0.0
    postgres_cpu_ms_per_notification: float = 0.0
    """Postgres CPU (postmaster and every backend, the bench's progress queries included) per row in the e2e phase;
    0 when Postgres is not one the bench started (DATABASE_URL set)."""
    backlog_postgres_cpu_ms_per_notification: float = 0.0
    db_round_trips_per_notification: float = 0.0
    """Statements the worker's pool sent during the e2e phase (claims included) per row: xnovu_db_round_trips_total."""
    history_events_per_notification: float = 0.0
    visibility_updates_per_notification: float = 0.0
    actions_per_notification: float = 0.0
    """Temporal Cloud billable actions estimated from the e2e phase's histories (docs/performance.md)."""
    history_events_per_fanout_item: float = 0.0
    visibility_updates_per_fanout_item: float = 0.0
    actions_per_fanout_item: float = 0.0
    listener_killed_latency_p50_s: float = 0.0
    listener_killed_latency_p99_s: float = 0.0
    """Commit → Novu receipt of a row committed right after the wake-up LISTEN connection was terminated."""
    ceiling_client_cpu_ms_per_workflow: float = 0.0
    """CPU of the bench process while it started the ceiling's workflows (the client's share of the ceiling; the
    xnovu worker starts its children itself, so its CPU holds that work too)."""
    server_writes_per_ceiling_workflow: float = 0.0
    """Temporal persistence writes (`persistence_requests` of write operations) per item; 0 when the server is
    not one the bench started."""
    server_writes_per_fanout_item: float = 0.0
    server_writes_per_notification: float = 0.0
    server_db_ms_per_ceiling_workflow: float = 0.0
    """Time the Temporal server spent in persistence calls per item (`persistence_latency` sums)."""
    server_db_ms_per_fanout_item: float = 0.0
    server_db_ms_per_notification: float = 0.0
    rss_backlog_mb: float = 0.0
    """Peak worker RSS while it works on a backlog of `backlog_rss_rows` rows (the last phase)."""
    noisy_b_urgent_p50_s: float = 0.0
    """Noisy neighbour, SEND_ORDER=priority: commit → Novu receipt of B's urgent rows while A's backlog drains."""
    noisy_b_urgent_p99_s: float = 0.0
    noisy_b_normal_p50_s: float = 0.0
    """... of B's normal rows."""
    noisy_b_normal_p99_s: float = 0.0
    noisy_b_fair_share_s: float = 0.0
    """B's fair share (`fair_share_s`): the target of noisy_b_normal_p99_s."""
    noisy_a_drain_s: float = 0.0
    """A's commit → A's last row SENT, with B's rows beside it."""
    noisy_a_alone_drain_s: float = 0.0
    """The same with A alone (no B), measured in the same run; 0: the phase did not run."""
    noisy_a_drain_ratio: float = 0.0
    """noisy_a_drain_s / noisy_a_alone_drain_s."""
    noisy_oldest_first_b_urgent_p50_s: float = 0.0
    """The same figures with SEND_ORDER=oldest-first (the order before priority), for comparison."""
    noisy_oldest_first_b_urgent_p99_s: float = 0.0
    noisy_oldest_first_b_normal_p50_s: float = 0.0
    noisy_oldest_first_b_normal_p99_s: float = 0.0
    noisy_oldest_first_a_drain_s: float = 0.0
    noisy_oldest_first_a_drain_ratio: float = 0.0
    trickle_idle_runs_per_day: float = 0.0
    """Runs the schedules (three polls, rules sync, retention) start in a day at the default intervals, idle."""
    trickle_idle_actions_per_day: float = 0.0
    """... and their estimated Temporal Cloud actions: each schedule's idle run, measured, times its runs a day."""
    trickle_per_min_actions_per_notification: float = 0.0
    """Trickle phase, the worker's WAKEUP_LINGER_MS and WAKEUP_DEBOUNCE_MS: estimated Cloud actions of every poll and
    child run the commits caused, per notification (rates: TricklePlan)."""
    trickle_per_min_p50_s: float = 0.0
    """... and commit → Novu receipt, median."""
    trickle_1_per_s_actions_per_notification: float = 0.0
    trickle_1_per_s_p50_s: float = 0.0
    trickle_4_per_s_actions_per_notification: float = 0.0
    trickle_4_per_s_p50_s: float = 0.0
    trickle_20_per_s_actions_per_notification: float = 0.0
    trickle_20_per_s_p50_s: float = 0.0
    trickle_burst_actions_per_notification: float = 0.0
    trickle_burst_p50_s: float = 0.0
    trickle_nolinger_per_min_actions_per_notification: float = 0.0
    """The same without linger (WAKEUP_LINGER_MS=0, WAKEUP_DEBOUNCE_MS=100: the behaviour before it), same run."""
    trickle_nolinger_per_min_p50_s: float = 0.0
    """... and commit → Novu receipt, median."""
    trickle_nolinger_1_per_s_actions_per_notification: float = 0.0
    trickle_nolinger_1_per_s_p50_s: float = 0.0
    trickle_nolinger_4_per_s_actions_per_notification: float = 0.0
    trickle_nolinger_4_per_s_p50_s: float = 0.0
    trickle_nolinger_20_per_s_actions_per_notification: float = 0.0
    trickle_nolinger_20_per_s_p50_s: float = 0.0
    trickle_nolinger_burst_actions_per_notification: float = 0.0
    trickle_nolinger_burst_p50_s: float = 0.0

    def as_dict(self) -> dict[str, float]:
        """Rounded for reading; milliseconds are the finest grain the emulator's receipt times carry."""
        return {k: round(v, 3) for k, v in asdict(self).items()}


@dataclass(frozen=True)
class TargetCheck:
    """One figure against its target, for the table (and for tests of the rules themselves)."""

    metric: str
    figure: float
    target: str
    passed: bool


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile: the smallest value with at least p % of the values at or below it.

    Nearest rank (no interpolation) keeps p99 of a small sample an actually observed value, which is what a latency
    target means; with fewer than 100 samples p99 is simply the maximum.
    """
    if not values:
        raise ValueError("percentile of an empty list")
    if not 0 <= p <= 100:
        raise ValueError(f"percentile must be within 0..100, got {p}")
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def per_item(total: float, items: int) -> float:
    """`total` (CPU seconds x 1000, statements, events, ...) per item; 0 for no items rather than a division error.

    A phase that ran no items has no cost per item to report, and the bench must still print the rest of its figures.
    """
    return total / items if items > 0 else 0.0


def fair_share_s(plan: NoisyPlan, poll_interval_s: float = POLL_INTERVAL_MS / 1000) -> float:
    """B's fair share in the noisy-neighbour phase: the time B's normal rows take at half the budget (two enterprises
    with work share it equally), plus one poll interval (the claim), plus one request of A's at the token budget
    (BUDGET_TURN_TOKENS at the full rate: the grant under way when B's first request arrives)."""
    return plan.b_normal / (plan.rps / 2) + poll_interval_s + BUDGET_TURN_TOKENS / plan.rps


#: The noisy-neighbour targets (issue 17): B's urgent rows p99, A's drain against A alone.
NOISY_URGENT_P99_S = 2.0
NOISY_DRAIN_RATIO = 1.05


def noisy_targets(r: BenchResult) -> list[TargetCheck]:
    """The noisy-neighbour phase's targets (SEND_ORDER=priority); none when the phase did not run."""
    if r.noisy_a_alone_drain_s <= 0:
        return []
    return [
        TargetCheck(
            "noisy_b_urgent_p99_s",
            r.noisy_b_urgent_p99_s,
            f"≤ {NOISY_URGENT_P99_S:g} s",
            r.noisy_b_urgent_p99_s <= NOISY_URGENT_P99_S,
        ),
        TargetCheck(
            "noisy_b_normal_p99_s",
            r.noisy_b_normal_p99_s,
            f"≤ B's fair share {r.noisy_b_fair_share_s:.2f} s",
            r.noisy_b_normal_p99_s <= r.noisy_b_fair_share_s,
        ),
        TargetCheck(
            "noisy_a_drain_ratio",
            r.noisy_a_drain_ratio,
            f"≤ {NOISY_DRAIN_RATIO:g} (A alone)",
            r.noisy_a_drain_ratio <= NOISY_DRAIN_RATIO,
        ),
    ]


#: The trickle targets (issue 18): 4 single-row commits a second cost at most this many estimated actions per
#: notification (each notification's own child costs 3 by design), with commit → Novu p50 at most this long.
TRICKLE_ACTIONS_MAX = 4.5
TRICKLE_P50_MAX_S = 0.5
#: The rate those two targets are for.
TRICKLE_TARGET_RATE = "4_per_s"


def trickle_targets(r: BenchResult) -> list[TargetCheck]:
    """The trickle phase's targets: the 4/s figures, and no rate costing more than without linger (same run); none
    when the phase did not run."""
    if r.trickle_idle_actions_per_day <= 0:
        return []
    figures = r.as_dict()
    actions = figures[f"trickle_{TRICKLE_TARGET_RATE}_actions_per_notification"]
    p50 = figures[f"trickle_{TRICKLE_TARGET_RATE}_p50_s"]
    checks = [
        TargetCheck(
            f"trickle_{TRICKLE_TARGET_RATE}_actions_per_notification",
            actions,
            f"≤ {TRICKLE_ACTIONS_MAX:g}",
            actions <= TRICKLE_ACTIONS_MAX,
        ),
        TargetCheck(
            f"trickle_{TRICKLE_TARGET_RATE}_p50_s", p50, f"≤ {TRICKLE_P50_MAX_S:g} s", p50 <= TRICKLE_P50_MAX_S
        ),
    ]
    for rate in TricklePlan().rates:
        if rate.name == TRICKLE_TARGET_RATE:
            continue
        metric = f"trickle_{rate.name}_actions_per_notification"
        before = figures[f"trickle_nolinger_{rate.name}_actions_per_notification"]
        checks.append(TargetCheck(metric, figures[metric], f"≤ without linger {before:g}", figures[metric] <= before))
    return checks


def evaluate_targets(r: BenchResult) -> list[TargetCheck]:
    """The issue's targets. Throughput ones are relative to the ceiling, so they mean the same on any machine."""
    return [*_main_targets(r), *noisy_targets(r), *trickle_targets(r)]


def _main_targets(r: BenchResult) -> list[TargetCheck]:
    if r.ceiling_per_s <= 0:  # `xnovu bench --only noisy`: the other phases did not run
        return []
    return [
        TargetCheck("throughput_ratio", r.throughput_ratio, "≥ 0.8", r.throughput_ratio >= 0.8),
        TargetCheck(
            "recipients_per_s",
            r.recipients_per_s,
            f"≥ 50 x e2e = {50 * r.e2e_per_s:.0f}",
            r.recipients_per_s >= 50 * r.e2e_per_s,
        ),
        TargetCheck("latency_p50_s", r.latency_p50_s, "≤ 1.5 s", r.latency_p50_s <= 1.5),
        TargetCheck("latency_p99_s", r.latency_p99_s, "≤ 3 s", r.latency_p99_s <= 3.0),
        TargetCheck("schedule_error_p99_s", r.schedule_error_p99_s, "≤ 1 s", r.schedule_error_p99_s <= 1.0),
        TargetCheck(
            "backlog_per_s",
            r.backlog_per_s,
            f"≥ 0.8 x ceiling = {0.8 * r.ceiling_per_s:.0f}",
            r.backlog_per_s >= 0.8 * r.ceiling_per_s,
        ),
        TargetCheck("rss_mb", r.rss_mb, "≤ 200 MB", r.rss_mb <= 200.0),
        TargetCheck(
            "limited_send_s",
            r.limited_send_s,
            f"≤ 1.1 x floor = {1.1 * r.limited_floor_s:.0f} s",
            0 < r.limited_send_s <= 1.1 * r.limited_floor_s,
        ),
        TargetCheck("wakeup_latency_p50_s", r.wakeup_latency_p50_s, "≤ 0.25 s", r.wakeup_latency_p50_s <= 0.25),
        TargetCheck("wakeup_latency_p99_s", r.wakeup_latency_p99_s, "≤ 1 s", r.wakeup_latency_p99_s <= 1.0),
        TargetCheck(
            "wakeup_runs_per_1000_commits",
            r.wakeup_runs_per_1000_commits,
            "≤ 5",
            r.wakeup_runs_per_1000_commits <= 5,
        ),
        TargetCheck("fanout_ratio", r.fanout_ratio, "≥ 0.95", r.fanout_ratio >= 0.95),
        TargetCheck(
            "worker_cpu_ms_per_notification",
            r.worker_cpu_ms_per_notification,
            f"≤ ceiling worker {r.ceiling_worker_cpu_ms_per_workflow:.2f} ms",
            r.worker_cpu_ms_per_notification <= r.ceiling_worker_cpu_ms_per_workflow,
        ),
        TargetCheck(
            "backlog_worker_cpu_ms_per_notification",
            r.backlog_worker_cpu_ms_per_notification,
            f"≤ ceiling worker {r.ceiling_worker_cpu_ms_per_workflow:.2f} ms",
            r.backlog_worker_cpu_ms_per_notification <= r.ceiling_worker_cpu_ms_per_workflow,
        ),
        TargetCheck(
            "db_round_trips_per_notification",
            r.db_round_trips_per_notification,
            "≤ 3",
            r.db_round_trips_per_notification <= 3.0,
        ),
        TargetCheck(
            "listener_killed_latency_p99_s",
            r.listener_killed_latency_p99_s,
            f"≤ interval + 1 s = {WAKEUP_POLL_INTERVAL_MS / 1000 + 1:g} s",
            r.listener_killed_latency_p99_s <= WAKEUP_POLL_INTERVAL_MS / 1000 + 1.0,
        ),
        TargetCheck("rss_backlog_mb", r.rss_backlog_mb, "≤ 200 MB", r.rss_backlog_mb <= 200.0),
    ]
