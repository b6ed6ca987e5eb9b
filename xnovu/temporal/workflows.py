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

#: Children started concurrently per step. Hundreds in one gather is much slower on the dev server than a few
#: dozen at a time (see README "Performance"); 25 measured best.
START_CHUNK = 25
#: Batches one run drains before continuing as new, keeping its history small.
MAX_BATCHES_PER_RUN = 20

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
    """Claims batches of one kind and fans out a child per row; drains while batches come back full."""

    @workflow.run
    async def run(self, inp: PollInput) -> PollResult:
        claimed = started = already = batches = 0
        while True:
            batch = await workflow.execute_activity_method(
                XnovuActivities.claim_notifications,
                inp.kind,
                start_to_close_timeout=CLAIM_TIMEOUT,
                retry_policy=CLAIM_RETRY,
            )
            batches += 1
            claimed += len(batch.rows)
            new, dup = await self._fan_out(batch.rows)
            started += new
            already += dup
            if len(batch.rows) < batch.batch_size:
                break
            if batches >= MAX_BATCHES_PER_RUN or workflow.info().is_continue_as_new_suggested():
                workflow.continue_as_new(PollInput(inp.kind, inp.batches_before + batches))
        return PollResult(inp.kind, claimed=claimed, started=started, already_running=already, batches=batches)

    async def _fan_out(self, rows: Sequence[ClaimedNotification]) -> tuple[int, int]:
        started = already = 0
        for i in range(0, len(rows), START_CHUNK):
            outcomes = await asyncio.gather(*(self._start(row) for row in rows[i : i + START_CHUNK]))
            started += sum(outcomes)
            already += len(outcomes) - sum(outcomes)
        return started, already

    async def _start(self, row: ClaimedNotification) -> bool:
        try:
            await workflow.start_child_workflow(
                NotificationTriggerWorkflow.run,
                NotificationInput(row.notification_id, row.attempt, row.scheduled_for),
                id=child_id(row.notification_id, row.attempt),
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
