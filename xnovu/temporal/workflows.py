"""Workflows: the schedule-started polls, the per-notification child and the batch trigger.

    Schedule xnovu-poll-{kind} ──▶ PollNotificationsWorkflow(kind)
        └─ claim_notifications (activity) ─▶ one child per row, id notification-{id}-a{attempt}, ABANDON
               └─ NotificationTriggerWorkflow: [durable timer until scheduled_for] ─▶ trigger_notification_by_id

Deterministic code only: no I/O, no settings, no wall clock (workflow.now()).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import WorkflowAlreadyStartedError

with workflow.unsafe.imports_passed_through():
    from xnovu.models import (
        ClaimedNotification,
        MultipleTriggerRequest,
        NotificationInput,
        PollInput,
        PollResult,
        TriggerRequest,
        TriggerResult,
    )
    from xnovu.temporal import searchattrs
    from xnovu.temporal.activities import XnovuActivities

#: Child starts in flight at once, as a sliding window. Lockstep chunks wait for the slowest start of each chunk;
#: hundreds at once swamp the dev server (see README "Performance" for the measurements behind this value).
START_WINDOW = 100

CLAIM_TIMEOUT = timedelta(seconds=30)
CLAIM_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=10), maximum_attempts=5
)
#: One trigger attempt: bounded well below the processing lease, so a lease never expires under a live attempt.
TRIGGER_TIMEOUT = timedelta(minutes=2)
#: Database outages and Novu key errors are retried until they heal; a Novu transient failure is not an
#: exception (it ends the attempt as FAILED with next_attempt_at), so this never re-sends acknowledged work.
TRIGGER_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=0,
)
BATCH_TIMEOUT = timedelta(minutes=30)


def child_id(notification_id: int, attempt: int) -> str:
    """The one workflow id an attempt may run under: duplicates are impossible by construction (I4)."""
    return f"notification-{notification_id}-a{attempt}"


@workflow.defn(name="NotificationTriggerWorkflow")
class NotificationTriggerWorkflow:
    """Sends one notification for one attempt, waiting first until its scheduled time."""

    @workflow.run
    async def run(self, inp: NotificationInput) -> TriggerResult:
        if inp.scheduled_for is not None:
            delay = (inp.scheduled_for - workflow.now()).total_seconds()
            if delay > 0:
                await workflow.sleep(delay)
        return await workflow.execute_local_activity_method(
            XnovuActivities.trigger_notification_by_id,
            TriggerRequest(inp.notification_id, inp.attempt),
            start_to_close_timeout=TRIGGER_TIMEOUT,
            retry_policy=TRIGGER_RETRY,
        )


@workflow.defn(name="TriggerMultipleNotificationsWorkflow")
class TriggerMultipleNotificationsWorkflow:
    """Triggers many notifications by id with bounded concurrency (TRIGGER_CONCURRENCY)."""

    @workflow.run
    async def run(self, request: MultipleTriggerRequest) -> list[TriggerResult]:
        return await workflow.execute_activity_method(
            XnovuActivities.trigger_multiple_notifications_by_id,
            request,
            start_to_close_timeout=BATCH_TIMEOUT,
            retry_policy=TRIGGER_RETRY,
        )


@workflow.defn(name="PollNotificationsWorkflow")
class PollNotificationsWorkflow:
    """Claims one batch of a kind and fans out a child per row; a full batch continues as new to drain the rest.

    One batch per run keeps the run short: a child that completes while its parent is still open wakes the parent
    (a workflow task, serialised on this one execution), so the sooner the parent is gone, the less it costs.
    """

    @workflow.run
    async def run(self, inp: PollInput) -> PollResult:
        batch = await workflow.execute_activity_method(
            XnovuActivities.claim_notifications,
            inp.kind,
            start_to_close_timeout=CLAIM_TIMEOUT,
            retry_policy=CLAIM_RETRY,
        )
        started, already = await self._fan_out(batch.rows)
        if len(batch.rows) >= batch.batch_size:
            # More rows may be waiting: drain them now, not a tick later, in a fresh run (small history).
            workflow.continue_as_new(PollInput(inp.kind, inp.batches_before + 1))
        return PollResult(
            inp.kind, claimed=len(batch.rows), started=started, already_running=already, batches=inp.batches_before + 1
        )

    async def _fan_out(self, rows: Sequence[ClaimedNotification]) -> tuple[int, int]:
        """Start every child with at most START_WINDOW starts in flight (a sliding window, not lockstep chunks)."""
        window = asyncio.Semaphore(START_WINDOW)

        async def start(row: ClaimedNotification) -> bool:
            async with window:
                return await self._start(row)

        outcomes = await asyncio.gather(*(start(row) for row in rows))
        return sum(outcomes), len(outcomes) - sum(outcomes)

    async def _start(self, row: ClaimedNotification) -> bool:
        try:
            # By name and without a result type: the poll never reads a child's result, so it is not decoded.
            await workflow.start_child_workflow(
                "NotificationTriggerWorkflow",
                NotificationInput(row.notification_id, row.attempt, row.scheduled_for),
                id=child_id(row.notification_id, row.attempt),
                task_queue=workflow.info().task_queue,
                parent_close_policy=workflow.ParentClosePolicy.ABANDON,
                search_attributes=searchattrs.for_notification(
                    row.notification_id, row.workflow_key, row.enterprise_id
                ),
                memo={"notification": row.name},
            )
        except WorkflowAlreadyStartedError:
            return False  # a racing poll or a manual trigger already runs this attempt: handled
        return True


WORKFLOWS = [NotificationTriggerWorkflow, TriggerMultipleNotificationsWorkflow, PollNotificationsWorkflow]
