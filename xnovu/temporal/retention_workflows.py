"""The retention workflow the `xnovu-retention` Schedule starts (docs/retention.md): one prune run as a sequence of
bounded steps, each an activity, so a worker shutdown or a retry costs at most one step.

Deterministic code only: no I/O, no settings, no wall clock.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from xnovu.core.retention import PruneStepInput, PruneStepResult
    from xnovu.temporal.retention_activities import STEP_BUDGET, RetentionActivities

#: A step prunes for STEP_BUDGET, then finishes the batch under way and records the run: minutes are plenty.
STEP_TIMEOUT = STEP_BUDGET + timedelta(minutes=4)
#: Every batch heartbeats (a batch and its pause take about a second): a worker that died is noticed in a minute.
STEP_HEARTBEAT = timedelta(seconds=60)
#: Database outages are retried a few times; the run's lease and counts are in Postgres, so a retried step goes on
#: where the last batch stopped. After that the next tick of the Schedule begins a new run.
STEP_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=5),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=1),
    maximum_attempts=5,
    non_retryable_error_types=["PruneFailed"],
)
#: Steps per run before continue-as-new, so a prune of a long backlog keeps a small history.
STEPS_PER_RUN = 100


@workflow.defn(name="PruneRetentionWorkflow")
class PruneRetentionWorkflow:
    """Prunes step after step until nothing older than the run's cutoffs is left."""

    @workflow.run
    async def run(self, request: PruneStepInput) -> PruneStepResult:
        for _ in range(STEPS_PER_RUN):
            result = await workflow.execute_activity_method(
                RetentionActivities.prune_retention,
                request,
                start_to_close_timeout=STEP_TIMEOUT,
                heartbeat_timeout=STEP_HEARTBEAT,
                retry_policy=STEP_RETRY,
            )
            if result.done:
                return result
            request = PruneStepInput(result.run_id)
        workflow.continue_as_new(request)


RETENTION_WORKFLOWS = [PruneRetentionWorkflow]
