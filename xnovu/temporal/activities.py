"""Activities: the only place where the Temporal side touches Postgres and Novu.

Bound methods of one object built with its dependencies (repository, trigger core), as in Temporal's samples.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field, replace
from datetime import timedelta

import asyncpg
from temporalio import activity
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from xnovu.core.arrivals import Arrivals
from xnovu.core.models import (
    ClaimBatch,
    MultipleTriggerPlan,
    MultipleTriggerRequest,
    PollKind,
    TriggerPlan,
    TriggerRequest,
    TriggerResult,
    child_id,
    schedule_id,
)
from xnovu.db.fleet import FleetScope
from xnovu.db.repository import ClaimLimits, Repository
from xnovu.errors import NovuConfigurationError
from xnovu.metrics import METRICS
from xnovu.service.processor import NotificationProcessor

#: How long a worker waits before retrying when Novu refuses the key: long enough not to hammer Novu,
#: short enough that a rotated key takes effect quickly.
CONFIG_ERROR_RETRY = timedelta(seconds=30)
#: Concurrent `describe` calls when the failed poll asks Temporal which expired leases still have a live attempt.
DESCRIBE_CONCURRENCY = 20
#: A claimed row whose attempt workflow does not exist yet may be between its claim and its start (the poll starts
#: children right after claiming): it is recovered only once its lease has been over for this long.
START_GRACE = timedelta(seconds=15)
#: How often a worker moves held rows out of the claim indexes (and released ones back), and how long that may take.
HOLD_SWEEP_EVERY = timedelta(seconds=5)
HOLD_SWEEP_TIMEOUT = timedelta(seconds=2)
#: The linger's describe of the schedule runs inside the claim: it must never hold the poll run long.
DESCRIBE_TIMEOUT = timedelta(seconds=1)
#: Rows a batch trigger's plan reads at once.
PLAN_CONCURRENCY = 10

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PollSettings:
    """What the claim activity needs from Settings (workflows never read settings)."""

    batch_size: int
    lease_ms: int
    scheduled_lookahead_ms: int
    limits: ClaimLimits
    enterprise_id: str | None = None
    trigger_concurrency: int = 10
    linger_s: float = 0.0
    """WAKEUP_LINGER_MS: how long a drained new-rows poll stays open for wake signals while commits trickle in."""
    fleet: FleetScope | None = None
    """The workers whose workflow task slots the rows window counts (xnovu/db/fleet.py); None: this worker's alone."""


@dataclass
class PollClock:
    """When each poll kind last claimed (for /status)."""

    last_poll: dict[str, float] = field(default_factory=dict)


def _claim_key(info: activity.Info) -> str:
    """What a re-run of one claim has in common with its first run: the poll run, and the local activity's sequence
    number within it (a replay after a lost workflow task runs the same activity id again)."""
    return f"{info.workflow_run_id}/{info.activity_id}"


class XnovuActivities:
    """Claim, trigger and batch-trigger activities."""

    def __init__(
        self,
        repo: Repository,
        processor: NotificationProcessor,
        poll: PollSettings,
        *,
        temporal: Client | None = None,
        arrivals: Arrivals | None = None,
    ) -> None:
        self.repo = repo
        self.arrivals = arrivals
        self.processor = processor
        self.poll = poll
        self.clock = PollClock()
        self._temporal = temporal
        self._last_sweep = -HOLD_SWEEP_EVERY.total_seconds()

    async def _should_linger(self, kind: PollKind, batch: ClaimBatch) -> bool:
        """Whether the new-rows poll that made this claim stays open for wake signals: it drained (a full or held
        back batch continues as new anyway), this worker heard commits come as a trickle (xnovu/core/arrivals.py),
        and no Schedule run is buffered behind it (a wake-up that came while it drained: that run starts when this
        one closes and claims what came since, so lingering too would only add a timer and signals, as in a burst).
        A new schedule run per commit costs three actions and its claim one; a wake signal one and the claim one."""
        if kind is not PollKind.NEW or self.poll.linger_s <= 0 or self.arrivals is None or self._temporal is None:
            return False
        if batch.capacity_limited or len(batch.rows) >= batch.batch_size:
            return False
        if not self.arrivals.trickling(self.poll.linger_s):
            return False
        try:  # a describe costs no action
            desc = await self._temporal.get_schedule_handle(schedule_id(kind)).describe(rpc_timeout=DESCRIBE_TIMEOUT)
        except Exception as exc:  # Temporal slow or the schedule gone: close as without linger, the safe cost
            activity.logger.info("linger skipped: schedule not described", extra={"error": type(exc).__name__})
            return False
        return desc.raw_description.info.buffer_size == 0

    @activity.defn(name="claim_notifications")
    async def claim_notifications(self, kind: PollKind) -> ClaimBatch:
        """Claim one batch for a poll kind (compare-and-set in Postgres, SKIP LOCKED between workers).

        Nothing is claimed while the kind's Schedule is paused: Temporal still runs an action triggered on a paused
        Schedule (a wake-up whose check raced the pause, `xnovu schedules trigger`), and a poll already draining
        continues as new; a pause must stop new claims all the same (README "Operations").
        """
        if await self._schedule_paused(kind):
            activity.logger.info("schedule paused: nothing claimed", extra={"kind": kind.value})
            return ClaimBatch(rows=[], batch_size=self.poll.batch_size)
        recoverable = await self._keep_live_leases() if kind is PollKind.FAILED else []
        await self._sweep_held_rows()
        batch = await self.repo.claim(
            kind,
            batch_size=self.poll.batch_size,
            lease_ms=self.poll.lease_ms,
            limits=self.poll.limits,
            lookahead_ms=self.poll.scheduled_lookahead_ms,
            enterprise_id=self.poll.enterprise_id,
            recoverable=recoverable,
            claim_key=_claim_key(activity.info()),
            fleet=self.poll.fleet,
        )
        if await self._should_linger(kind, batch):
            assert self.arrivals is not None
            batch = replace(batch, linger_s=self.poll.linger_s, linger_owner=self.arrivals.identity)
        self.clock.last_poll[kind.value] = time.time()
        METRICS.last_poll.labels(kind=kind.value).set(self.clock.last_poll[kind.value])
        METRICS.poll_batch_size.labels(kind=kind.value).observe(len(batch.rows))
        if batch.rows or batch.capacity_limited:
            activity.logger.info(
                "claimed batch",
                extra={"kind": kind.value, "count": len(batch.rows), "capacity_limited": batch.capacity_limited},
            )
        return batch

    async def _sweep_held_rows(self) -> None:
        """Held rows out of (and released rows back into) the claim indexes, at most every HOLD_SWEEP_EVERY in this
        worker and never for longer than HOLD_SWEEP_TIMEOUT: the sweep only saves the claims reading held rows, so
        a slow or failed one is logged and the claim goes on (it once stalled every claim; docs/failure-modes.md).

        First, one step of the urgency recompute of a priority whose sort_order changed (at most RECOMPUTE_BATCH
        rows in one short transaction; nothing but an empty read when nothing changed): before the claim, never
        under its lock (docs/priority.md "Urgency")."""
        now = time.monotonic()
        if now - self._last_sweep < HOLD_SWEEP_EVERY.total_seconds():
            return
        self._last_sweep = now
        try:
            await self.repo.recompute_priority_step(timeout_s=HOLD_SWEEP_TIMEOUT.total_seconds())
        except (TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
            activity.logger.warning("priority recompute skipped", extra={"error": type(exc).__name__})
        try:
            await self.repo.hold_sweep(timeout_s=HOLD_SWEEP_TIMEOUT.total_seconds())
        except (TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
            activity.logger.warning("hold sweep skipped", extra={"error": type(exc).__name__})

    async def _schedule_paused(self, kind: PollKind) -> bool:
        client = self._temporal or activity.client()
        try:
            desc = await client.get_schedule_handle(schedule_id(kind)).describe()
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                return False  # started without its Schedule (a test, a manual run): nothing to honour
            raise
        return bool(desc.schedule.state.paused)

    async def _keep_live_leases(self) -> list[int]:
        """Before recovering expired leases, renew those whose attempt Temporal still runs; returns the ids of the
        rows whose attempt is gone, the only PROCESSING rows the claim may recover.

        The lease means "the attempt is dead", never "the attempt is slow": an attempt waiting for a worker slot or
        the token budget, or sending for minutes, still has a running workflow, so its row is not re-claimed.
        Rows whose workflow is closed or terminated, and legacy rows, are left to the claim; a row whose workflow
        does not exist yet is given START_GRACE first, since a poll starts its children right after claiming them.
        """
        expired = await self.repo.expired_leases(
            limit=self.poll.batch_size, lease_ms=self.poll.lease_ms, enterprise_id=self.poll.enterprise_id
        )
        if not expired:
            return []
        client = self._temporal or activity.client()
        gate = asyncio.Semaphore(DESCRIBE_CONCURRENCY)

        async def state(notification_id: int, attempt: int, expired_for_s: float) -> str:
            async with gate:
                try:
                    desc = await client.get_workflow_handle(child_id(notification_id, attempt)).describe()
                except RPCError as exc:
                    if exc.status != RPCStatusCode.NOT_FOUND:
                        raise  # unsure: the activity is retried rather than recovering a row that may be live
                    return "gone" if expired_for_s >= START_GRACE.total_seconds() else "starting"
                return "live" if desc.status == WorkflowExecutionStatus.RUNNING else "gone"

        states = await asyncio.gather(*(state(*e) for e in expired))
        live = [(i, a) for (i, a, _), st in zip(expired, states, strict=True) if st == "live"]
        gone = [i for (i, _, _), st in zip(expired, states, strict=True) if st == "gone"]
        if live:
            await self.repo.extend_leases(live, self.poll.lease_ms)
        if gone:
            activity.logger.warning("recovering rows whose attempt is gone", extra={"count": len(gone), "ids": gone})
        return gone

    @activity.defn(name="trigger_notification_by_id")
    async def trigger_notification_by_id(self, request: TriggerRequest) -> TriggerResult:
        """One attempt at one notification (see xnovu.service.processor)."""
        started = time.perf_counter()
        try:
            result = await self.processor.process(
                request.notification_id,
                request.attempt,
                time_budget_s=request.time_budget_s,
                piece=request.piece,
                progress=request.progress,
            )
        except NovuConfigurationError as exc:
            METRICS.novu_configuration_errors.inc()
            # The reason says which (key refused, plan limit reached, wrong NOVU_API_URL) and its fix.
            activity.logger.error(
                "Novu configuration error: the attempt is held until it is fixed",
                extra={"notification_id": request.notification_id, "error": str(exc)},
            )
            raise ApplicationError(
                str(exc), type="NovuConfigurationError", next_retry_delay=CONFIG_ERROR_RETRY
            ) from None
        METRICS.observe_result(result, time.perf_counter() - started)
        return result

    @activity.defn(name="trigger_multiple_notifications_by_id")
    async def trigger_multiple_notifications_by_id(self, request: MultipleTriggerRequest) -> MultipleTriggerPlan:
        """Plan a batch trigger: for each id, the attempt whose own workflow TriggerMultipleNotificationsWorkflow
        starts or joins (it never sends itself, so it can never be a second sender of an attempt), or the answer
        when no attempt may run."""
        gate = asyncio.Semaphore(PLAN_CONCURRENCY)

        async def one(notification_id: int) -> TriggerPlan:
            async with gate:
                return await self.processor.plan(notification_id)

        plans = await asyncio.gather(*(one(i) for i in request.notification_ids))
        return MultipleTriggerPlan(list(plans), request.concurrency or self.poll.trigger_concurrency)
