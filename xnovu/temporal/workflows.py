"""Workflows: the schedule-started polls, the per-notification child and the batch trigger.

    Schedule xnovu-poll-{kind} ──▶ PollNotificationsWorkflow(kind)
        └─ claim_notifications (local activity) ─▶ one child per row, id notification-{id}-a{attempt}, ABANDON
               └─ NotificationTriggerWorkflow: [durable timer until scheduled_for] ─▶ trigger_notification_by_id

Deterministic code only: no I/O, no settings, no wall clock (workflow.now()).

The two workflows on every notification's path (the poll and the per-notification child) run outside Temporal's
workflow sandbox (`sandboxed=False`). The sandbox re-enters its isolated module namespace for every payload the
SDK encodes or decodes and builds a fresh namespace per run; measured side by side on 2 000 rows, the worker's CPU
per notification went from 14.3 to 10.4 ms without it (docs/performance.md). What the sandbox checks at run time
is checked here instead: tests/unit/test_workflow_determinism.py rejects non-deterministic calls in this module's
source, and tests/integration/test_replay.py replays real histories of both workflows against this code.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError, ChildWorkflowError, WorkflowAlreadyStartedError

with workflow.unsafe.imports_passed_through():
    from xnovu.core.models import (
        ClaimBatch,
        ClaimedNotification,
        MultipleTriggerRequest,
        NotificationInput,
        Outcome,
        PollInput,
        PollKind,
        PollResult,
        TriggerPlan,
        TriggerRequest,
        TriggerResult,
        child_id,
    )
    from xnovu.temporal import searchattrs
    from xnovu.temporal.activities import XnovuActivities
    from xnovu.temporal.options import child_task_queue

#: Child starts in flight at once, as a sliding window. Lockstep chunks wait for the slowest start of each chunk;
#: hundreds at once swamp the dev server (see README "Performance" for the measurements behind this value).
START_WINDOW = 100

CLAIM_TIMEOUT = timedelta(seconds=30)
CLAIM_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=10), maximum_attempts=5
)
#: An attempt runs as a sequence of pieces, each a local activity that starts Novu requests for at most
#: PIECE_BUDGET and then reports IN_PROGRESS; the next piece resumes from the delivery ledger under the same claim.
#: Why pieces rather than one long activity: an attempt's length depends on the recipients and on the token budget
#: shared with every other attempt (10 000 recipients at 60 tokens/s take ~3 minutes, 100 000 at 600/s as long),
#: so no fixed timeout fits; a bounded piece keeps each local activity short, a crash costs at most one piece (its
#: progress is already in the ledger), and the attempt's workflow stays open, which is what tells the failed poll
#: that the attempt is alive (README "Lease, fencing and back-pressure").
PIECE_BUDGET = timedelta(seconds=30)
#: A piece stops starting requests after PIECE_BUDGET; requests under way finish (each bounded by NOVU_TIMEOUT_MS,
#: at most 2 minutes, with two quick retries), so this bound is never what ends a healthy piece.
TRIGGER_TIMEOUT = timedelta(minutes=10)
#: Pieces per run before continue-as-new, so the history of a very long attempt stays small.
PIECES_PER_RUN = 100
#: Ids one TriggerMultipleNotificationsWorkflow takes (its history grows by about four events per id).
MAX_BATCH_IDS = 1_000
#: Waits before a poll retries the start of a child whose id is still taken (see PollNotificationsWorkflow._start).
ALREADY_STARTED_RETRIES = (timedelta(seconds=1), timedelta(seconds=2), timedelta(seconds=4))
#: Patch marker of those retries: histories recorded before them replay without timers.
RETRY_ALREADY_STARTED = "retry-already-started"
#: A poll that found rows but no room in flight (back-pressure) claims again after this, doubling up to the cap.
CAPACITY_WAIT = timedelta(seconds=1)
CAPACITY_WAIT_MAX = timedelta(seconds=8)
#: ... but while the urgent window has room, at most this long: an urgent row committed during the back-off is
#: claimed by the chain's next claim (a commit's wake-up waits behind the running chain), so it waits about a second,
#: not up to CAPACITY_WAIT_MAX (docs/priority.md "Claims").
URGENT_ROOM_WAIT = timedelta(seconds=1)
#: Patch marker of that cap: a history recorded before it replays with the back-off it recorded.
CAP_BACKOFF_FOR_URGENT = "cap-backoff-for-urgent"
#: The signal that ends a poll chain's capacity back-off at once: a worker's wake-up listener sends it when a commit
#: makes an urgent row due while the chain runs (xnovu/worker/wakeup.py), since a schedule trigger would only buffer
#: a run behind the chain. No patch marker: a back-off that no signal ends records the same timer as the plain sleep
#: of earlier releases, so their histories replay here and, what a marker would break, this release's un-woken runs
#: replay on the previous release (a rollback, or older workers during an upgrade; tests/integration/test_replay.py).
WAKE_SIGNAL = "wake"
#: A new-rows poll that drained while commits trickle in stays open for wake signals (its claim says how long:
#: ClaimBatch.linger_s, WAKEUP_LINGER_MS), so the next commit costs a signal and a claim (two actions) instead of a
#: schedule run and a claim (four); docs/performance.md "Cost at any arrival rate". While it lingers the run carries
#: this memo key (the identity of the worker whose claim decided it), which the listeners read with a describe: only
#: a lingering run is signalled, and by its owner only; a draining or backing-off one gets the plain trigger (buffered
#: behind it at no cost). A query would tell the same but costs an action each; a describe and a memo change none.
LINGER_MEMO = "xnovuLingering"
#: No patch marker: histories recorded before the linger have claims without linger_s (decoded as 0), so they never
#: reach it; a lingering run cannot replay on a release without the linger, marker or not (README "Deploy": set
#: WAKEUP_LINGER_MS=0 before such a rollback; `xnovu schedules heal` ends a run whose workflow task keeps failing).
#: A lingering run continues as new after this many claims or this long, so its history (about fifteen events per
#: claim with its child's start and close) stays small and the run well inside POLL_RUN_TIMEOUT.
LINGER_CLAIMS_PER_RUN = 100
LINGER_RUN_MAX = timedelta(minutes=2)
#: Database outages and Novu key errors are retried until they heal; a Novu transient failure is not an
#: exception (it ends the attempt as FAILED with next_attempt_at), so this never re-sends acknowledged work.
TRIGGER_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=0,
)


@workflow.defn(name="NotificationTriggerWorkflow", sandboxed=False)
class NotificationTriggerWorkflow:
    """Sends one notification for one attempt, waiting first until its scheduled time."""

    @workflow.run
    async def run(self, inp: NotificationInput) -> TriggerResult:
        if inp.scheduled_for is not None and inp.pieces_before == 0:
            delay = (inp.scheduled_for - workflow.now()).total_seconds()
            if delay > 0:
                await workflow.sleep(delay)
        attempt, piece, progress = inp.attempt, inp.pieces_before, inp.progress
        while True:
            result = await workflow.execute_local_activity_method(
                XnovuActivities.trigger_notification_by_id,
                TriggerRequest(inp.notification_id, attempt, PIECE_BUDGET.total_seconds(), piece, progress),
                start_to_close_timeout=TRIGGER_TIMEOUT,
                retry_policy=TRIGGER_RETRY,
            )
            if not result.more:
                return result
            attempt = result.attempt
            if result.wait_s is not None:
                # Woken before the send time by Postgres' clock (the one the claim uses): wait the rest, then run
                # the same piece again (processor: a timer that ends early waits the rest).
                await workflow.sleep(result.wait_s)
                continue
            # A piece that stopped without saying where to resume (its claim was refused, then held again) is
            # resumed where it began: its window's ledger tells what it did.
            piece, progress = piece + 1, result.progress or progress
            if piece - inp.pieces_before >= PIECES_PER_RUN:
                workflow.continue_as_new(NotificationInput(inp.notification_id, attempt, None, piece, progress))


@workflow.defn(name="TriggerMultipleNotificationsWorkflow")
class TriggerMultipleNotificationsWorkflow:
    """Triggers many notifications by id, each as its attempt's own workflow notification-{id}-a{k} (started, or
    joined when it already runs), at most `concurrency` (TRIGGER_CONCURRENCY) at a time.

    It never sends itself: a batch that sent from its own activity could load a row PENDING at attempt k, then
    confirm the claim of attempt k+1 that a poll made meanwhile, and two senders ran one attempt (and a retried
    batch activity could race itself the same way).
    """

    @workflow.run
    async def run(self, request: MultipleTriggerRequest) -> list[TriggerResult]:
        if len(request.notification_ids) > MAX_BATCH_IDS:
            # Each id adds about four events to this history (its child's start and result): bounded here, far
            # below Temporal's 51 200 events; NotificationClient splits longer lists into several batches.
            raise ApplicationError(
                f"{len(request.notification_ids)} ids in one batch; at most {MAX_BATCH_IDS} "
                "(NotificationClient.async_trigger_multiple_notifications splits longer lists)",
                type="BatchTooLarge",
                non_retryable=True,
            )
        plan = await workflow.execute_local_activity_method(
            XnovuActivities.trigger_multiple_notifications_by_id,
            request,
            start_to_close_timeout=CLAIM_TIMEOUT,
            retry_policy=CLAIM_RETRY,
        )
        gate = asyncio.Semaphore(max(1, plan.concurrency))

        async def one(p: TriggerPlan) -> TriggerResult:
            if p.result is not None or p.attempt is None:
                return p.result or TriggerResult(p.notification_id, Outcome.REJECTED, reason="nothing to run")
            async with gate:
                return await self._run(p, p.attempt)

        return list(await asyncio.gather(*(one(p) for p in plan.plans)))

    async def _run(self, p: TriggerPlan, attempt: int) -> TriggerResult:
        wid = child_id(p.notification_id, attempt)
        try:
            handle = await workflow.start_child_workflow(
                NotificationTriggerWorkflow.run,
                NotificationInput(p.notification_id, attempt),
                id=wid,
                task_queue=workflow.info().task_queue,
                parent_close_policy=workflow.ParentClosePolicy.ABANDON,
                search_attributes=searchattrs.for_notification(
                    p.notification_id, p.workflow_key, p.enterprise_id, p.priority
                ),
                memo=searchattrs.memo_for_notification(p.name),
                priority=searchattrs.temporal_priority(p.priority, p.enterprise_id),
            )
        except WorkflowAlreadyStartedError:
            return TriggerResult(
                p.notification_id,
                Outcome.SKIPPED,
                "PROCESSING",
                reason=f"attempt {attempt} is running as workflow {wid}; its result will be there",
                attempt=attempt,
            )
        try:
            return await handle
        except ChildWorkflowError as exc:  # e.g. terminated by an operator: that id's outcome, not the batch's
            return TriggerResult(
                p.notification_id,
                Outcome.SKIPPED,
                reason=f"workflow {wid} did not complete: {type(exc.cause).__name__ if exc.cause else 'failed'}",
                attempt=attempt,
            )


@workflow.defn(name="PollNotificationsWorkflow", sandboxed=False)
class PollNotificationsWorkflow:
    """Claims one batch of a kind and fans out a child per row; a full batch continues as new to drain the rest.

    One batch per run keeps the run short: a child that completes while its parent is still open wakes the parent
    (a workflow task, serialised on this one execution), so the sooner the parent is gone, the less it costs.
    """

    def __init__(self) -> None:
        self._woken = False

    @workflow.signal(name=WAKE_SIGNAL)
    def wake(self) -> None:
        """Rows became due: claim again now (an urgent row during the back-off, any row while lingering)."""
        self._woken = True

    @workflow.run
    async def run(self, inp: PollInput) -> PollResult:
        # A local activity: the claim runs inside the run's first workflow task and its result is recorded with the
        # child starts, saving the activity task's dispatch and the second workflow task (~4 server writes per poll
        # run, ~0.26 per notification on the e2e bench; docs/performance.md). A crash mid-claim is no different from
        # an activity's: the rows it claimed and never started are recovered by the failed poll after their lease.
        batch = await self._claim(inp.kind)
        started, already = await self._fan_out(batch.rows)
        if len(batch.rows) >= batch.batch_size:
            # More rows may be waiting: drain them now, not a tick later, in a fresh run (small history).
            workflow.continue_as_new(PollInput(inp.kind, inp.batches_before + 1))
        if batch.capacity_limited:
            # Rows are waiting, but as much is in flight as can be sent: claim again as soon as some finish
            # (backing off while nothing does), rather than a whole tick later.
            waits = 0 if batch.rows else inp.capacity_waits + 1
            wait = min(CAPACITY_WAIT * 2 ** min(waits, 8), CAPACITY_WAIT_MAX)
            if batch.urgent_room and wait > URGENT_ROOM_WAIT and workflow.patched(CAP_BACKOFF_FOR_URGENT):
                wait = URGENT_ROOM_WAIT  # only the normal window is full: an urgent row must not wait up to 8 s
            # A wake signal (an urgent commit) ends the wait, one that came during the fan-out at once; but only
            # while the urgent window has room: a storm of urgent commits into a full urgent window must not turn
            # the back-off into a claim per commit.
            with contextlib.suppress(asyncio.TimeoutError):
                await workflow.wait_condition(lambda: self._woken and batch.urgent_room, timeout=wait)
            workflow.continue_as_new(PollInput(inp.kind, inp.batches_before + 1, waits))
        claimed = len(batch.rows)
        if batch.linger_s > 0:
            more = await self._linger(inp, batch.linger_s, batch.linger_owner)
            claimed, started, already = claimed + more[0], started + more[1], already + more[2]
        return PollResult(
            inp.kind, claimed=claimed, started=started, already_running=already, batches=inp.batches_before + 1
        )

    async def _claim(self, kind: PollKind) -> ClaimBatch:
        """One claim, as a local activity (the comment in `run` says why)."""
        return await workflow.execute_local_activity_method(
            XnovuActivities.claim_notifications, kind, start_to_close_timeout=CLAIM_TIMEOUT, retry_policy=CLAIM_RETRY
        )

    async def _linger(self, inp: PollInput, linger_s: float, owner: str) -> tuple[int, int, int]:
        """Take wake signals for `linger_s` at a time, claiming at each, until a whole window brings none.

        One timer per window (an action), not one per wait: a wait_condition with a timeout starts a timer each
        time. A batch that comes back full or held back continues as new, as in `run` (and that run decides again
        whether to linger). Returns (claimed, started, already running)."""
        claimed = started = already = claims = 0
        workflow.upsert_memo({LINGER_MEMO: owner or True})  # the owner's listener alone signals it
        while True:
            window = asyncio.create_task(workflow.sleep(linger_s))
            woke = False
            while True:
                await workflow.wait_condition(lambda: self._woken or window.done())  # noqa: B023 (awaited here)
                if not self._woken:
                    break
                self._woken, woke = False, True
                batch = await self._claim(inp.kind)
                s, a = await self._fan_out(batch.rows)
                claimed, started, already, claims = claimed + len(batch.rows), started + s, already + a, claims + 1
                long = claims >= LINGER_CLAIMS_PER_RUN or workflow.now() - workflow.info().start_time > LINGER_RUN_MAX
                if batch.capacity_limited or len(batch.rows) >= batch.batch_size or long:
                    window.cancel()
                    # The next run decides for itself whether it lingers; it must not start out marked.
                    workflow.upsert_memo({LINGER_MEMO: None})
                    workflow.continue_as_new(PollInput(inp.kind, inp.batches_before + 1))
            if not woke:
                return claimed, started, already

    async def _fan_out(self, rows: Sequence[ClaimedNotification]) -> tuple[int, int]:
        """Start every child with at most START_WINDOW starts in flight (a sliding window, not lockstep chunks)."""
        window = asyncio.Semaphore(START_WINDOW)

        async def start(row: ClaimedNotification) -> bool:
            async with window:
                return await self._start(row)

        outcomes = await asyncio.gather(*(start(row) for row in rows))
        return sum(outcomes), len(outcomes) - sum(outcomes)

    async def _start(self, row: ClaimedNotification) -> bool:
        """Start the row's child; True if this poll started it, False if a workflow under its id runs it.

        A workflow already running under the id is either the attempt's sender (a manual trigger raced the poll)
        or the attempt's previous workflow still closing: a row given back unsent keeps its attempt number, so the
        same id can be claimed again before the old run has closed. The start is retried for a few seconds, so the
        second case is sent now instead of after a whole lease; in the first, the running workflow sends it.
        """
        for wait in (*ALREADY_STARTED_RETRIES, None):
            try:
                # By name and without a result type: the poll never reads a child's result, so it is not decoded.
                await workflow.start_child_workflow(
                    "NotificationTriggerWorkflow",
                    NotificationInput(row.notification_id, row.attempt, row.scheduled_for),
                    id=child_id(row.notification_id, row.attempt),
                    task_queue=child_task_queue(workflow.info().task_queue),
                    parent_close_policy=workflow.ParentClosePolicy.ABANDON,
                    search_attributes=searchattrs.for_notification(
                        row.notification_id, row.workflow_key, row.enterprise_id, row.priority
                    ),
                    memo=searchattrs.memo_for_notification(row.name),
                    # An urgent child overtakes queued children on the task queue; its enterprise is its fairness
                    # key. Neither is part of the command's replay check (workflow id and type are), so histories
                    # recorded without them replay unchanged (tests/integration/test_priority_temporal.py).
                    priority=searchattrs.temporal_priority(row.priority, row.enterprise_id),
                )
            except WorkflowAlreadyStartedError:
                if wait is None or not workflow.patched(RETRY_ALREADY_STARTED):
                    return False
                await workflow.sleep(wait)
            else:
                return True
        return False


WORKFLOWS = [NotificationTriggerWorkflow, TriggerMultipleNotificationsWorkflow, PollNotificationsWorkflow]
