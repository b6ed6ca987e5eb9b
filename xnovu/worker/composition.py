"""The composition root: everything the worker runs on, built from `Settings` in one place and in one order.

Nothing else constructs the repository, the token budget, the Novu client, the trigger core, the activities, the
Temporal worker or the wake-up listener: `xnovu worker start` (through `WorkerManager`), `xnovu doctor` and the
tests all get them from here, so the wiring a test exercises is the wiring that runs in production.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from temporalio.client import Client
from temporalio.worker import Worker

from xnovu.config import Settings
from xnovu.core.arrivals import Arrivals, linger_window_s
from xnovu.db.budget import PostgresTokenBudget
from xnovu.db.fleet import FleetScope
from xnovu.db.repository import ClaimLimits, Repository, connect
from xnovu.db.retention import RetentionPolicy
from xnovu.db.rules import RuleRepository
from xnovu.errors import ConfigError, DatabaseError, TemporalUnavailableError
from xnovu.metrics import METRICS
from xnovu.novu.client import BULK_COST, NovuClient
from xnovu.novu.ratelimit import LocalTokenBucket, TokenBudget
from xnovu.service.processor import NotificationProcessor
from xnovu.temporal.activities import PollSettings, XnovuActivities
from xnovu.temporal.bootstrap import bootstrap
from xnovu.temporal.connection import connect_temporal
from xnovu.temporal.options import poll_worker_options, worker_options
from xnovu.temporal.retention_activities import RetentionActivities
from xnovu.temporal.retention_workflows import RETENTION_WORKFLOWS
from xnovu.temporal.rule_activities import RuleActivities
from xnovu.temporal.rule_workflows import RULE_WORKFLOWS
from xnovu.temporal.rules import rule_schedule_config
from xnovu.temporal.workflows import WORKFLOWS, PollNotificationsWorkflow
from xnovu.tracing import Tracing
from xnovu.worker.wakeup import WakeupListener

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Claims keep in flight at most this many seconds of the Novu token budget (back-pressure; docs/design.md
#: "Lease, fencing and back-pressure"), and at most this many batches of rows ...
CLAIM_HORIZON_S = 10
CLAIM_BATCHES_IN_FLIGHT = 5
#: ... and at most this many times the workflow task slots of the fleet (the TEMPORAL_MAX_CONCURRENT_WORKFLOWS of every
#: worker seen lately on the task queue, xnovu/db/fleet.py) of rows per class. A child holds its slot while its send
#: waits for tokens, so children beyond the slots wait on Temporal's
#: task queue, first come first served, where neither urgency nor fair share reach them (the token budget orders
#: only the sends that hold a slot). Twice the slots keeps a queue of one slot's worth, so slots never run dry
#: between claims. Measured in the noisy-neighbour phase (1 000 + 2 000-recipient backlog of A at 60 tokens/s, B's
#: 20 urgent and 20 normal rows; docs/performance.md): window 500 rows: B normal p99 24.6 s; 100: 4.6 s; 40: 4.0 s
#: but A's drain 12 % slower.
CLAIM_SLOTS_IN_FLIGHT = 2


def novu_client(settings: Settings, budget: TokenBudget | None = None, tracing: Tracing | None = None) -> NovuClient:
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
        settle_s=settings.novu_outcome_settle_ms / 1000,
        on_unknown=METRICS.observe_unknown_outcomes,
    )


def build_processor(settings: Settings, repo: Repository, novu: NovuClient) -> NotificationProcessor:
    """The trigger core (no Temporal in it) on this repository and Novu client."""
    return NotificationProcessor(
        repo,
        novu,
        max_attempts=settings.max_attempts,
        retry_backoff_base_ms=settings.retry_backoff_base_ms,
        retry_backoff_max_ms=settings.retry_backoff_max_ms,
        processing_lease_ms=settings.processing_lease_ms,
    )


def claim_limits(settings: Settings) -> ClaimLimits:
    """What the deployment may have claimed and unfinished at once, from the token budget, the batch size and the
    workflow task slots of the fleet (each claim counts the workers seen, `ClaimLimits.for_fleet`; never fewer than
    this worker's own).

    The batches part does not grow with the workers: the polls are singletons (one chain per kind, whichever worker
    runs it), so what they claim ahead of the sends is a matter of the batch size, not of how many workers send; and
    the token window (ten seconds of the deployment's Novu budget) bounds a token-bound send rate whatever the rows.
    A fleet with more than CLAIM_BATCHES_IN_FLIGHT x POLL_BATCH_SIZE / (CLAIM_SLOTS_IN_FLIGHT x slots) workers (5
    with the defaults) raises POLL_BATCH_SIZE to use every slot (ops/README.md "Scaling")."""
    return ClaimLimits(
        max_rows=CLAIM_BATCHES_IN_FLIGHT * settings.poll_batch_size,
        max_tokens=max(BULK_COST, math.ceil(settings.novu_rate_limit_rps * CLAIM_HORIZON_S)),
        rows_per_slot=CLAIM_SLOTS_IN_FLIGHT,
        own_slots=settings.temporal_max_concurrent_workflows,
    )


def fleet_scope(settings: Settings) -> FleetScope:
    """The workers that serve this worker's task queue: the queue its polls start their children on."""
    return FleetScope(settings.temporal_namespace, settings.temporal_task_queue)


def build_activities(
    settings: Settings,
    repo: Repository,
    novu: NovuClient,
    temporal: Client | None = None,
    arrivals: Arrivals | None = None,
) -> XnovuActivities:
    """The claim and trigger activities; `temporal` lets the failed poll ask whether a lapsed attempt still runs,
    `arrivals` (what the wake-up listener heard) whether a drained new-rows poll stays open for wake signals."""
    poll = PollSettings(
        batch_size=settings.poll_batch_size,
        lease_ms=settings.processing_lease_ms,
        limits=claim_limits(settings),
        # Look ahead two ticks so a late tick never makes a send late (docs/design.md: at least one interval).
        scheduled_lookahead_ms=2 * 1000 * settings.interval_seconds("scheduled"),
        enterprise_id=settings.poll_enterprise_id,
        trigger_concurrency=settings.trigger_concurrency,
        linger_s=linger_window_s(settings.wakeup_linger_ms, settings.wakeup_debounce_ms, settings.poll_interval_ms),
        fleet=fleet_scope(settings),
    )
    return XnovuActivities(repo, build_processor(settings, repo, novu), poll, temporal=temporal, arrivals=arrivals)


def build_rule_activities(settings: Settings, repo: Repository, client: Client) -> RuleActivities:
    """The rules sync and rule fire activities (README "Rules")."""
    return RuleActivities(RuleRepository(repo), client, rule_schedule_config(settings))


def build_retention_activities(settings: Settings, repo: Repository, client: Client) -> RetentionActivities:
    """The prune step of the `xnovu-retention` Schedule (docs/retention.md), with RETENTION_DAYS and
    RETENTION_NOTIFICATION_DAYS."""
    return RetentionActivities(repo.pool, RetentionPolicy.from_settings(settings), client)


def build_worker(
    client: Client,
    settings: Settings,
    activities: XnovuActivities,
    rules: RuleActivities | None = None,
    retention: RetentionActivities | None = None,
) -> Worker:
    """The Temporal worker; with `rules`, it also runs the rules sync and rule fires (README "Rules"), with
    `retention` the prunes (docs/retention.md)."""
    others: list[Callable[..., Any]] = [rules.sync_rules, rules.fire_rule] if rules is not None else []
    if retention is not None:
        others.append(retention.prune_retention)
    return Worker(
        client,
        workflows=[*WORKFLOWS, *RULE_WORKFLOWS, *RETENTION_WORKFLOWS],
        activities=[
            activities.claim_notifications,
            activities.trigger_notification_by_id,
            activities.trigger_multiple_notifications_by_id,
            *others,
        ],
        **worker_options(settings),
    )


def build_poll_worker(client: Client, settings: Settings, activities: XnovuActivities) -> Worker:
    """The poll worker: the poll workflows on their own task queue (xnovu/temporal/options.py `poll_task_queue`),
    with the claim they run as a local activity. The main worker registers the poll workflow too, so a chain a
    schedule of an earlier release started on TEMPORAL_TASK_QUEUE still runs during an upgrade."""
    return Worker(
        client,
        workflows=[PollNotificationsWorkflow],
        activities=[activities.claim_notifications],
        **poll_worker_options(settings),
    )


async def with_retries(what: str, connect_once: Callable[[], Awaitable[T]], timeout_s: float) -> T:
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


@dataclass
class Components:
    """What one worker process runs on. Filled in order by `open()`; `close()` releases whatever was opened, so a
    start-up that fails half-way leaves nothing behind."""

    settings: Settings
    tracing: Tracing
    repo: Repository | None = None
    budget: TokenBudget | None = None
    novu: NovuClient | None = None
    client: Client | None = None
    activities: XnovuActivities | None = None
    rule_activities: RuleActivities | None = None
    retention_activities: RetentionActivities | None = None
    worker: Worker | None = None
    poll_worker: Worker | None = None
    wakeup: WakeupListener | None = None

    async def open(self, connect_timeout_s: float) -> None:
        """Connect, check the schema, bootstrap Temporal, build the activities, the worker and the listener."""
        s = self.settings
        if s.novu_secret_key is None:
            novu_client(s)  # raises the readable ConfigError before anything is opened
        self.repo = await with_retries("Postgres", lambda: connect(s, tracing=self.tracing), connect_timeout_s)
        self.budget = PostgresTokenBudget(
            self.repo.pool,
            s.novu_rate_limit_rps,
            weights=s.fair_share_weight_map,
            fifo=s.send_order == "oldest-first",
        )
        self.novu = novu_client(s, self.budget, self.tracing)
        present = await self.repo.schema_present()
        if not all(present.values()):
            raise DatabaseError("the notify schema is missing or incomplete; run `xnovu db migrate` first")
        # A worker's queries need every migration it ships (an upgrade that replaced the workers before migrating
        # failed every claim on a missing column instead).
        missing = await self.repo.missing_migrations()
        if missing:
            raise DatabaseError(f"migrations not applied yet: {', '.join(missing)}; run `xnovu db migrate` first")
        interceptors = self.tracing.temporal_interceptors()
        self.client = await with_retries(
            "Temporal", lambda: connect_temporal(s, interceptors=interceptors), connect_timeout_s
        )
        await bootstrap(self.client, s, serves_poll_queue=True)  # its poll worker starts right after this
        arrivals = Arrivals()
        self.activities = build_activities(s, self.repo, self.novu, self.client, arrivals)
        self.rule_activities = build_rule_activities(s, self.repo, self.client)
        self.retention_activities = build_retention_activities(s, self.repo, self.client)
        self.worker = build_worker(self.client, s, self.activities, self.rule_activities, self.retention_activities)
        self.poll_worker = build_poll_worker(self.client, s, self.activities)
        # Started by the manager after the worker runs: the schedules a wake-up triggers exist by now (bootstrap).
        self.wakeup = WakeupListener(s, self.client, arrivals)

    async def close(self) -> None:
        """Close the Novu client and the pool (the worker and the listener are stopped by their owner first)."""
        if self.novu is not None:
            await self.novu.aclose()
        if self.repo is not None:
            await self.repo.close()
