"""The worker process: one Temporal worker hosting polls, children and activities, plus the health server.

`WorkerManager(settings).start()/stop()` is the programmatic form of `xnovu worker start` (SPEC §10).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, TypeVar

from temporalio.client import Client
from temporalio.worker import PollerBehaviorAutoscaling, Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from xnovu import __version__
from xnovu.config import Settings
from xnovu.core.processor import NotificationProcessor
from xnovu.db.budget import PostgresTokenBudget
from xnovu.db.repository import ClaimLimits, Repository, connect
from xnovu.db.rules import RuleRepository
from xnovu.errors import ConfigError, DatabaseError, TemporalUnavailableError
from xnovu.metrics import METRICS
from xnovu.novu.client import BULK_COST, NovuClient
from xnovu.novu.ratelimit import LocalTokenBucket, TokenBudget
from xnovu.temporal.activities import PollSettings, XnovuActivities
from xnovu.temporal.bootstrap import bootstrap
from xnovu.temporal.connection import connect_temporal
from xnovu.temporal.rule_activities import RuleActivities
from xnovu.temporal.rule_workflows import RULE_WORKFLOWS
from xnovu.temporal.rules import rule_schedule_config
from xnovu.temporal.workflows import WORKFLOWS
from xnovu.tracing import Tracing
from xnovu.worker.health import HealthServer
from xnovu.worker.wakeup import WakeupListener

log = logging.getLogger(__name__)
T = TypeVar("T")

#: In-flight activities get this long to finish after SIGTERM before the worker cancels them.
GRACEFUL_SHUTDOWN = timedelta(seconds=30)


#: Workflow code only touches xnovu's dataclasses; passing xnovu and its libraries through keeps the sandbox
#: from re-importing C extensions (asyncpg) and heavy stacks on every workflow run.
SANDBOX = SandboxedWorkflowRunner(
    restrictions=SandboxRestrictions.default.with_passthrough_modules(
        "xnovu",
        "asyncpg",
        "httpx",
        "httpcore",
        "pydantic",
        "pydantic_settings",
        "prometheus_client",
        "starlette",
        "uvicorn",
        "anyio",
        "rich",
        # Temporal's TracingInterceptor runs inside the sandbox; its context must be the one the worker sees.
        "opentelemetry",
    )
)


def novu_client(
    settings: Settings, budget: TokenBudget | None = None, tracing: Tracing | None = None
) -> NovuClient:
    """The Novu client with this process's token budget, metrics hook and (when on) tracing."""
    if settings.novu_secret_key is None:
        raise ConfigError("NOVU_SECRET_KEY: not set; set it to your Novu secret key (or run `xnovu dev`)")
    return NovuClient(
        settings.novu_api_url,
        settings.novu_secret_key.get_secret_value(),
        timeout_s=settings.novu_timeout_ms / 1000,
        budget=budget or LocalTokenBucket(settings.novu_rate_limit_rps),
        on_response=METRICS.observe_novu,
        tracing=tracing,
    )


def build_processor(settings: Settings, repo: Repository, novu: NovuClient) -> NotificationProcessor:
    return NotificationProcessor(
        repo,
        novu,
        max_attempts=settings.max_attempts,
        retry_backoff_base_ms=settings.retry_backoff_base_ms,
        retry_backoff_max_ms=settings.retry_backoff_max_ms,
        processing_lease_ms=settings.processing_lease_ms,
    )


#: Claims keep in flight at most this many seconds of the Novu token budget (back-pressure; README "Lease,
#: fencing and back-pressure"), and at most this many batches of rows.
CLAIM_HORIZON_S = 10
CLAIM_BATCHES_IN_FLIGHT = 5


def claim_limits(settings: Settings) -> ClaimLimits:
    """What the deployment may have claimed and unfinished at once, from the token budget and the batch size."""
    return ClaimLimits(
        max_rows=CLAIM_BATCHES_IN_FLIGHT * settings.poll_batch_size,
        max_tokens=max(BULK_COST, math.ceil(settings.novu_rate_limit_rps * CLAIM_HORIZON_S)),
    )


def build_activities(
    settings: Settings, repo: Repository, novu: NovuClient, temporal: Client | None = None
) -> XnovuActivities:
    poll = PollSettings(
        batch_size=settings.poll_batch_size,
        lease_ms=settings.processing_lease_ms,
        limits=claim_limits(settings),
        # Look ahead two ticks so a late tick never makes a send late (SPEC §4: at least one interval).
        scheduled_lookahead_ms=2 * 1000 * settings.interval_seconds("scheduled"),
        enterprise_id=settings.poll_enterprise_id,
        trigger_concurrency=settings.trigger_concurrency,
    )
    return XnovuActivities(repo, build_processor(settings, repo, novu), poll, temporal=temporal)


def worker_options(settings: Settings) -> dict[str, Any]:
    """Worker options from settings, shared with the benchmark's ceiling worker so both are measured alike.

    Task pollers autoscale: with the SDK's fixed five, only one polls the queue where every new workflow's first
    task lands, and new workflows wait there behind it (measured: the ceiling went from ~50 to ~75 workflows/s).
    """
    return {
        "task_queue": settings.temporal_task_queue,
        "max_concurrent_activities": settings.temporal_max_concurrent_activities,
        "max_concurrent_local_activities": settings.temporal_max_concurrent_activities,
        "max_concurrent_workflow_tasks": settings.temporal_max_concurrent_workflows,
        "max_cached_workflows": settings.temporal_max_cached_workflows,
        "graceful_shutdown_timeout": GRACEFUL_SHUTDOWN,
        "workflow_runner": SANDBOX,
        "workflow_task_poller_behavior": PollerBehaviorAutoscaling(),
        "activity_task_poller_behavior": PollerBehaviorAutoscaling(),
    }


def build_rule_activities(settings: Settings, repo: Repository, client: Client) -> RuleActivities:
    return RuleActivities(RuleRepository(repo), client, rule_schedule_config(settings))


def build_worker(
    client: Client, settings: Settings, activities: XnovuActivities, rules: RuleActivities | None = None
) -> Worker:
    """The worker; with `rules`, it also runs the rules sync and rule fires (README "Rules")."""
    rule_activities: list[Callable[..., Any]] = [rules.sync_rules, rules.fire_rule] if rules is not None else []
    return Worker(
        client,
        workflows=[*WORKFLOWS, *RULE_WORKFLOWS],
        activities=[
            activities.claim_notifications,
            activities.trigger_notification_by_id,
            activities.trigger_multiple_notifications_by_id,
            *rule_activities,
        ],
        **worker_options(settings),
    )


async def _with_retries(what: str, connect_once: Callable[[], Awaitable[T]], timeout_s: float) -> T:
    """Connect at start-up, waiting out a dependency that is still starting (compose, Kubernetes) with backoff."""
    deadline = time.monotonic() + timeout_s
    delay = 0.5
    while True:
        try:
            return await connect_once()
        except (DatabaseError, TemporalUnavailableError) as exc:
            if time.monotonic() + delay > deadline:
                raise
            log.warning(f"{what} not reachable yet; retrying", extra={"error": str(exc), "retry_in_s": delay})
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


class WorkerManager:
    """Starts and stops the worker, its connections and the health server, in the right order."""

    def __init__(
        self,
        settings: Settings,
        *,
        health: bool = True,
        connect_timeout_s: float = 60.0,
        tracing: Tracing | None = None,
    ) -> None:
        self.settings = settings
        #: Decided by the entry point (xnovu.tracing.tracing_from_environ), which also shuts it down.
        self.tracing = tracing or Tracing.off()
        self.gauges_sampled_at = 0.0
        self.connect_timeout_s = connect_timeout_s
        self.started_at = time.time()
        self.repo: Repository | None = None
        self.client: Client | None = None
        self.novu: NovuClient | None = None
        self.budget: TokenBudget | None = None
        self.activities: XnovuActivities | None = None
        self.rule_activities: RuleActivities | None = None
        self.worker: Worker | None = None
        self.wakeup: WakeupListener | None = None
        self._worker_task: asyncio.Task[None] | None = None
        self._health: HealthServer | None = None
        self._with_health = health

    async def start(self) -> None:
        """Connect, check the schema, bootstrap Temporal, start polling and serve /health."""
        s = self.settings
        if s.novu_secret_key is None:
            novu_client(s)  # raises the readable ConfigError before anything is opened
        self.tracing.instrument_asyncpg()
        self.repo = await _with_retries("Postgres", lambda: connect(s), self.connect_timeout_s)
        self.budget = PostgresTokenBudget(self.repo.pool, s.novu_rate_limit_rps)
        self.novu = novu_client(s, self.budget, self.tracing)
        present = await self.repo.schema_present()
        if not all(present.values()):
            raise DatabaseError("the notify schema is missing or incomplete; run `xnovu db migrate` first")
        interceptors = self.tracing.temporal_interceptors()
        self.client = await _with_retries(
            "Temporal", lambda: connect_temporal(s, interceptors=interceptors), self.connect_timeout_s
        )
        await bootstrap(self.client, s)
        self.activities = build_activities(s, self.repo, self.novu, self.client)
        self.rule_activities = build_rule_activities(s, self.repo, self.client)
        self.worker = build_worker(self.client, s, self.activities, self.rule_activities)
        self._worker_task = asyncio.create_task(self.worker.run(), name="temporal-worker")
        self._init_gauges()
        # After bootstrap: the schedules a wake-up triggers exist by now.
        self.wakeup = WakeupListener(s, self.client)
        await self.wakeup.start()
        if self._with_health:
            self._health = HealthServer(self)
            await self._health.start()
        log.info(
            "worker started",
            extra={"version": __version__, "task_queue": s.temporal_task_queue, "namespace": s.temporal_namespace},
        )

    def _init_gauges(self) -> None:
        """Series the alert rules need from the first scrape: intervals, build info, poll clocks at start time."""
        from xnovu.core.models import PollKind

        METRICS.build_info.labels(version=__version__).set(1)
        for kind in PollKind:
            METRICS.poll_interval.labels(kind=kind.value).set(self.settings.interval_seconds(kind.value))
            METRICS.last_poll.labels(kind=kind.value).set(self.started_at)

    @property
    def running(self) -> bool:
        return self._worker_task is not None and not self._worker_task.done()

    async def wait(self) -> None:
        """Until the worker stops (or fails: the exception propagates)."""
        if self._worker_task is not None:
            await self._worker_task

    async def stop(self) -> None:
        """Stop polling for new tasks, let in-flight ones finish (grace period), close everything."""
        if self.wakeup is not None:
            await self.wakeup.stop()  # first: no new poll runs are asked for while the worker drains
        if self.worker is not None and self.running:
            await self.worker.shutdown()
        if self._worker_task is not None:
            try:
                await self._worker_task
            except Exception:
                log.exception("worker ended with an error")
        if self._health is not None:
            await self._health.stop()
        if self.novu is not None:
            await self.novu.aclose()
        if self.repo is not None:
            await self.repo.close()
        log.info("worker stopped")
