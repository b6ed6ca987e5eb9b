"""Prometheus metrics of one worker process, on a registry of their own (served at /metrics)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from xnovu.models import TriggerResult


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
            "xnovu_novu_configuration_errors", "Novu refused the API key (401/403/402)", registry=self.registry
        )

    def observe_result(self, result: TriggerResult, seconds: float) -> None:
        self.processed.labels(outcome=result.outcome.value).inc()
        self.trigger_seconds.observe(seconds)
        if result.outcome.value == "dead_lettered":
            self.dead_lettered.inc()

    def observe_novu(self, status_code: int | None, seconds: float) -> None:
        self.novu_requests.labels(status_code=str(status_code) if status_code else "none").inc()
        self.novu_request_seconds.observe(seconds)


#: The process-wide metrics (one worker per process).
METRICS = Metrics()
