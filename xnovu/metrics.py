"""Prometheus metrics of one worker process, on a registry of their own (served at /metrics).

Every name here is what `ops/grafana/xnovu.json` and `ops/prometheus/alerts.yml` query (a test scrapes a live worker
and checks them). Gauges that describe the database (dead-letter rows, expired leases, the shared token budget) are
sampled when /metrics is scraped, at most every few seconds, in one round trip (README "Observability").
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from xnovu.core.backlog import OTHER, Backlog
from xnovu.core.models import Outcome, PollKind, TriggerResult
from xnovu.errors import NOVU_CONFIG_STATUSES


class Metrics:
    """The worker's counters and histograms."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.processed = Counter(
            "xnovu_notifications_processed", "Trigger attempts by outcome", ["outcome"], registry=self.registry
        )
        self.novu_requests = Counter(
            "xnovu_novu_requests",
            "Novu HTTP requests by status code (none = timeout/connection error)",
            ["status_code"],
            registry=self.registry,
        )
        self.novu_request_seconds = Histogram(
            "xnovu_novu_request_seconds", "Novu HTTP request latency", registry=self.registry
        )
        self.trigger_seconds = Histogram(
            "xnovu_trigger_latency_seconds",
            "Duration of one trigger attempt (claim to finalize)",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=self.registry,
        )
        self.poll_batch_size = Histogram(
            "xnovu_poll_batch_size",
            "Rows claimed per poll batch",
            ["kind"],
            buckets=(0, 1, 5, 10, 25, 50, 100, 250, 500, 1000),
            registry=self.registry,
        )
        self.dead_lettered = Counter(
            "xnovu_dead_lettered", "Notifications dead-lettered by this worker", registry=self.registry
        )
        self.dead_letter_total = Gauge(
            "xnovu_dead_letter_rows",
            "Rows currently dead-lettered (sampled by /status and /metrics)",
            registry=self.registry,
        )
        self.novu_configuration_errors = Counter(
            "xnovu_novu_configuration_errors",
            "Attempts held on a Novu configuration error (401/403 key refused, 402 plan limit, wrong NOVU_API_URL), "
            "one per try (every 30 s per held attempt)",
            registry=self.registry,
        )
        self.novu_unknown_outcomes = Counter(
            "xnovu_novu_unknown_outcomes",
            "Events Novu may have processed (no answer, a cut connection, 408/502/503/504) whose outcome its activity "
            "feed could not tell; recorded unknown in the ledger and held, never resent blindly",
            registry=self.registry,
        )
        self.build_info = Gauge("xnovu_build_info", "Always 1; the xnovu version", ["version"], registry=self.registry)
        self.worker_running = Gauge(
            "xnovu_worker_running", "1 while the Temporal worker polls its task queue", registry=self.registry
        )
        self.last_poll = Gauge(
            "xnovu_last_poll_timestamp_seconds",
            "Unix time this worker last ran a claim per poll kind (its start time until the first)",
            ["kind"],
            registry=self.registry,
        )
        self.poll_interval = Gauge(
            "xnovu_poll_interval_seconds",
            "Configured schedule interval per poll kind",
            ["kind"],
            registry=self.registry,
        )
        self.leases_expired = Gauge(
            "xnovu_processing_leases_expired",
            "PROCESSING rows whose lease (PROCESSING_LEASE_MS) has run out: their worker died or hangs",
            registry=self.registry,
        )
        self.lease_overrun = Gauge(
            "xnovu_processing_lease_overrun_seconds",
            "How long ago the oldest expired PROCESSING lease ran out (0 when none)",
            registry=self.registry,
        )
        self.budget_tokens = Gauge(
            "xnovu_novu_token_budget_tokens",
            "Tokens in the deployment-wide Novu budget now (negative while every worker waits out a 429)",
            registry=self.registry,
        )
        self.budget_capacity = Gauge(
            "xnovu_novu_token_budget_capacity", "Size of the shared Novu token bucket", registry=self.registry
        )
        self.budget_rate = Gauge(
            "xnovu_novu_token_budget_rate",
            "Refill rate of the shared Novu token bucket (NOVU_RATE_LIMIT_RPS)",
            registry=self.registry,
        )
        self.db_round_trips = Counter(
            "xnovu_db_round_trips",
            "Statements this process's connection pool sent to Postgres (BEGIN/COMMIT included), each a round trip",
            registry=self.registry,
        )
        self.due_backlog = Gauge(
            "xnovu_due_backlog_rows",
            "Rows due now (a claim could take them) by urgency (0 normal, above 0 more urgent; the 10 most urgent "
            "levels, the rest as other); counts of the oldest 10 000 per kind when xnovu_due_backlog_capped is 1",
            ["urgency"],
            registry=self.registry,
        )
        self.due_oldest = Gauge(
            "xnovu_due_oldest_age_seconds",
            "How long the oldest due row of each urgency has been due",
            ["urgency"],
            registry=self.registry,
        )
        self.due_backlog_by_enterprise = Gauge(
            "xnovu_due_backlog_by_enterprise_rows",
            "Rows due now by enterprise: the 10 with the largest backlog by id, rows without one as none, the rest "
            "as other",
            ["enterprise"],
            registry=self.registry,
        )
        self.due_oldest_by_enterprise = Gauge(
            "xnovu_due_oldest_age_by_enterprise_seconds",
            "How long the oldest due row of each enterprise (as in xnovu_due_backlog_by_enterprise_rows) has been due",
            ["enterprise"],
            registry=self.registry,
        )
        self.due_urgent_oldest = Gauge(
            "xnovu_due_urgent_oldest_age_seconds",
            "How long the oldest due row of the highest urgency above normal has been due (0 when no urgent row is "
            "due): an emergency waiting",
            registry=self.registry,
        )
        self.due_highest_urgency = Gauge(
            "xnovu_due_highest_urgency",
            "The highest urgency with due rows (0 when only normal or no rows are due)",
            registry=self.registry,
        )
        self.due_backlog_capped = Gauge(
            "xnovu_due_backlog_capped",
            "1 when the backlog sample stopped at its bound (counts are then those of the oldest rows read)",
            registry=self.registry,
        )
        self.sampled_at = Gauge(
            "xnovu_db_gauges_sampled_timestamp_seconds",
            "Unix time the database gauges were last sampled",
            registry=self.registry,
        )
        # Known label values exist from the start, so rate() and the dashboard see a 0 rather than no series.
        for outcome in Outcome:
            if outcome is not Outcome.IN_PROGRESS:
                self.processed.labels(outcome=outcome.value)
        for kind in PollKind:
            self.poll_batch_size.labels(kind=kind.value)
        # Novu's configuration errors too: increase() sees a worker's first 401/402/403 only if a 0 came before it
        # (ops/prometheus/alerts.yml alerts on it).
        for status in NOVU_CONFIG_STATUSES:
            self.novu_requests.labels(status_code=str(status))
        self._backlog_baseline()

    def observe_result(self, result: TriggerResult, seconds: float) -> None:
        if result.outcome is Outcome.IN_PROGRESS:
            return  # one piece of a long attempt: the attempt is counted (and timed) when it ends
        self.processed.labels(outcome=result.outcome.value).inc()
        self.trigger_seconds.observe(seconds)
        if result.outcome.value == "dead_lettered":
            self.dead_lettered.inc()

    def _backlog_baseline(self) -> None:
        """The series that always exist (at 0 when nothing is due), so dashboards and alerts see a value."""
        self.due_backlog.labels(urgency="0").set(0)
        self.due_oldest.labels(urgency="0").set(0)
        self.due_backlog_by_enterprise.labels(enterprise=OTHER).set(0)
        self.due_oldest_by_enterprise.labels(enterprise=OTHER).set(0)

    def observe_backlog(self, backlog: Backlog) -> None:
        """Replace the backlog series with `backlog`'s (a group gone from the backlog leaves no stale series)."""
        for gauge in (self.due_backlog, self.due_oldest, self.due_backlog_by_enterprise, self.due_oldest_by_enterprise):
            gauge.clear()
        self._backlog_baseline()
        for level, due in backlog.by_urgency.items():
            self.due_backlog.labels(urgency=level).set(due.due)
            self.due_oldest.labels(urgency=level).set(due.oldest_s)
        for enterprise, due in backlog.by_enterprise.items():
            self.due_backlog_by_enterprise.labels(enterprise=enterprise).set(due.due)
            self.due_oldest_by_enterprise.labels(enterprise=enterprise).set(due.oldest_s)
        self.due_urgent_oldest.set(backlog.urgent_oldest_s)
        self.due_highest_urgency.set(backlog.highest_urgency or 0)
        self.due_backlog_capped.set(1 if backlog.capped else 0)

    def count_round_trip(self, _record: object) -> None:
        """asyncpg query-logger callback (registered on each pool connection by xnovu/db/repository.py)."""
        self.db_round_trips.inc()

    def observe_unknown_outcomes(self, events: int) -> None:
        self.novu_unknown_outcomes.inc(events)

    def observe_novu(self, status_code: int | None, seconds: float) -> None:
        self.novu_requests.labels(status_code=str(status_code) if status_code else "none").inc()
        self.novu_request_seconds.observe(seconds)


#: The process-wide metrics (one worker per process).
METRICS = Metrics()
