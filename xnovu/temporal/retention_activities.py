"""The retention activity (docs/retention.md): one bounded step of a prune run, on the worker's pool."""

from __future__ import annotations

import time
from datetime import timedelta

import asyncpg
from temporalio import activity
from temporalio.client import Client
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from xnovu.core.retention import RETENTION_SCHEDULE_ID, PruneStepInput, PruneStepResult
from xnovu.db.retention import PruneBusyError, Pruner, RetentionPolicy
from xnovu.errors import XnovuError

#: How long one step prunes before it hands back to its workflow (the batch under way finishes first): short enough
#: that a worker shutdown waits for little, long enough that a big backlog takes few steps.
STEP_BUDGET = timedelta(seconds=60)
#: What `xnovu schedules pause` writes when it stops a prune under way.
PAUSED = "stopped: the xnovu-retention schedule was paused"


class RetentionActivities:
    """Bound to the worker's pool, the retention policy from Settings and the Temporal client."""

    def __init__(self, pool: asyncpg.Pool, policy: RetentionPolicy, client: Client | None = None) -> None:
        self.pool = pool
        self.policy = policy
        self._temporal = client

    @activity.defn(name="prune_retention")
    async def prune_retention(self, request: PruneStepInput) -> PruneStepResult:
        """Begin a prune run (or continue `request.run_id`) and prune for at most STEP_BUDGET.

        Nothing is pruned while the Schedule is paused: Temporal still runs an action triggered on a paused Schedule,
        and a run already under way goes on step after step; a pause stops both (README "Operations").
        """
        pruner = Pruner(self.pool, self.policy)
        run_id = request.run_id
        if await self._paused():
            activity.logger.info("retention schedule paused: nothing pruned", extra={"run_id": run_id})
            if run_id is None:
                return PruneStepResult(None, done=True, skipped="paused")
            run = await pruner.finish(run_id, PAUSED)
            return PruneStepResult(run.id, done=True, rows=run.rows, skipped="paused")
        if run_id is None:
            try:
                run_id = (await pruner.begin("schedule")).id
            except PruneBusyError as exc:
                activity.logger.info("prune skipped", extra={"reason": str(exc)})
                return PruneStepResult(None, done=True, skipped=str(exc))
        try:
            done = await pruner.step(
                run_id, deadline=time.monotonic() + STEP_BUDGET.total_seconds(), on_batch=activity.heartbeat
            )
        except PruneBusyError as exc:
            activity.logger.warning("prune stopped", extra={"run_id": run_id, "reason": str(exc)})
            return PruneStepResult(run_id, done=True, skipped=str(exc))
        except XnovuError as exc:
            # Not an outage (those are retried): something only an operator can fix, said on the run's record.
            await pruner.finish(run_id, str(exc))
            raise ApplicationError(str(exc), type="PruneFailed", non_retryable=True) from None
        if done:
            run = await pruner.finish(run_id)
            return PruneStepResult(run.id, done=True, rows=run.rows)
        return PruneStepResult(run_id, done=False, rows=(await pruner.get(run_id)).rows)

    async def _paused(self) -> bool:
        client = self._temporal or activity.client()
        try:
            desc = await client.get_schedule_handle(RETENTION_SCHEDULE_ID).describe()
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                return False  # started without its Schedule (a test, a manual run): nothing to honour
            raise
        return bool(desc.schedule.state.paused)
