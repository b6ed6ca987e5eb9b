"""Runs of xnovu's schedules left on a task queue that no worker serves any more, and their healing.

A schedule runs one action at a time (BUFFER_ONE, SKIP), so a run that nobody executes holds its schedule until its
run timeout: ten minutes for a poll, an hour for the rules sync, three for the retention. That happens when a
schedule moves to another task queue while a run is open on the old one and the old queue's workers are gone: a
rollback to a release that starts the polls on TEMPORAL_TASK_QUEUE, with a run left on TEMPORAL_TASK_QUEUE-polls
(docs/design.md "Task queues"), or a changed TEMPORAL_TASK_QUEUE. Such a run is terminated: nothing of it is lost,
since it is between two workflow tasks (its claims were recorded with the task that made them, and its children are
abandoned to run on their own, xnovu/temporal/workflows.py), and the schedule's buffered tick then starts on the
queue it targets now.

A run is stranded only when all three hold, so a healthy one is never touched:
- its task queue is not the one its schedule starts runs on now (a worker that is starting, or restarting, finds the
  runs on the queue it is about to serve and leaves them);
- its next workflow task has waited at least STRANDED_AFTER without being picked up (a run that just started, or
  sleeps on a timer, has no such task);
- no worker has polled that queue since the task was queued (a worker polling the queue with a free slot would have
  taken it; Temporal lists a stopped worker's last poll for five minutes, so a listed poller alone proves nothing).

A run on any queue is also terminated when its workflow task has been attempted FAILING_ATTEMPTS times: no worker
present can run it (a poll run that lingered, after a rollback to a release without the linger), and Temporal would
retry it until the run times out. Terminating it loses nothing for the same reason as above.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from temporalio.api.enums.v1 import PendingWorkflowTaskState, TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import (
    Client,
    ScheduleActionExecutionStartWorkflow,
    ScheduleActionStartWorkflow,
    WorkflowExecutionStatus,
)
from temporalio.service import RPCError, RPCStatusCode

from xnovu.temporal.schedules import SYSTEM_SCHEDULES, any_schedule_id

log = logging.getLogger(__name__)

#: How long a run's workflow task must wait unclaimed, on a queue nobody polled meanwhile, before it counts as
#: stranded. A worker polling the queue takes a task within milliseconds (the poll queue's tasks never queue behind
#: children); half a minute also outlasts a worker's sticky queue (5 s) and a failed task's retry (10 s).
STRANDED_AFTER = timedelta(seconds=30)
#: A run whose workflow task has been attempted this many times is stuck whatever its queue: its history was written
#: by code no worker present has (a lingering poll run after a rollback to a release without the linger), or it hits a
#: bug; Temporal retries such a task until the run times out (ten minutes for a poll), holding its schedule.
FAILING_ATTEMPTS = 3
#: The reason a healed run's history records (Web UI, `temporal workflow describe`).
HEAL_REASON = "xnovu: stranded on task queue {queue}, which no worker polls; its schedule now starts runs on {target}"
FAILING_REASON = "xnovu: its workflow task failed {attempts} times; no worker present can run it"
#: The command that heals them, named wherever a stranded run is reported.
HEAL_COMMAND = "xnovu schedules heal"


@dataclass(frozen=True)
class OffTargetRun:
    """An open run of a schedule on a task queue the schedule no longer starts runs on: stranded, or not yet."""

    schedule_id: str
    workflow_id: str
    run_id: str
    task_queue: str
    target_queue: str
    waiting: timedelta | None
    """How long its workflow task has waited unclaimed; None if none is waiting (it runs, or sleeps on a timer)."""
    stranded: bool
    failing: int = 0
    """Attempts of its workflow task so far when they keep failing (FAILING_ATTEMPTS or more), else 0."""

    def describe(self) -> str:
        if self.failing:
            return (
                f"{self.workflow_id} (schedule {self.schedule_id}) on task queue {self.task_queue}: its workflow task "
                f"failed or timed out {self.failing} times (no worker present can run it, e.g. after a rollback)"
            )
        where = (
            f"{self.workflow_id} (schedule {self.schedule_id}) is open on task queue {self.task_queue}; its schedule "
            f"now starts runs on {self.target_queue}"
        )
        if self.stranded:
            assert self.waiting is not None
            return f"{where}; its workflow task has waited {self.waiting.total_seconds():.0f} s and no worker polls it"
        if self.waiting is None:
            return f"{where}; it has no workflow task waiting (it runs or sleeps): not stranded"
        return (
            f"{where}; its workflow task has waited {self.waiting.total_seconds():.0f} s: not stranded (a worker "
            f"polled that queue since, or it waited less than {STRANDED_AFTER.total_seconds():.0f} s)"
        )


@dataclass(frozen=True)
class HealReport:
    """What `heal_stranded` did: the runs it terminated, and the off-target runs it left (not stranded, yet)."""

    terminated: list[OffTargetRun]
    left: list[OffTargetRun]


def is_stranded(
    *,
    task_queue: str,
    target_queue: str,
    task_scheduled_at: datetime | None,
    last_poll_at: datetime | None,
    now: datetime,
    stranded_after: timedelta,
) -> bool:
    """The three conditions of the module docstring. `task_scheduled_at`: when the run's pending workflow task was
    queued, None if it has none waiting (running on a worker, or sleeping); `last_poll_at`: the latest poll of
    `task_queue` Temporal lists, None if none."""
    if task_queue == target_queue or task_scheduled_at is None:
        return False
    if now - task_scheduled_at < stranded_after:
        return False
    return last_poll_at is None or last_poll_at < task_scheduled_at


async def _last_poll(client: Client, namespace: str, queue: str) -> datetime | None:
    """The latest workflow-task poll of `queue` that Temporal remembers (it forgets a poller five minutes after its
    last poll)."""
    desc = await client.workflow_service.describe_task_queue(
        DescribeTaskQueueRequest(
            namespace=namespace,
            task_queue=TaskQueue(name=queue),
            task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
        )
    )
    polls = [p.last_access_time.ToDatetime(tzinfo=UTC) for p in desc.pollers if p.HasField("last_access_time")]
    return max(polls, default=None)


async def find_off_target(client: Client, schedule_ids: Iterable[str] | None = None) -> list[OffTargetRun]:
    """Every open run of xnovu's own schedules (or of `schedule_ids` among them) on a task queue its schedule no
    longer targets, each marked stranded or not (module docstring); reads only. The schedules are described side by
    side (each describe is a query to that schedule's own workflow). STRANDED_AFTER is read at each call (a test
    shortens it)."""
    wanted = [any_schedule_id(name) for name in SYSTEM_SCHEDULES]
    if schedule_ids is not None:
        chosen = set(schedule_ids)
        wanted = [sid for sid in wanted if sid in chosen]
    per_schedule = await asyncio.gather(*(_off_target_runs(client, sid) for sid in wanted))
    return [run for runs in per_schedule for run in runs]


async def _off_target_runs(client: Client, sid: str) -> list[OffTargetRun]:
    try:
        desc = await client.get_schedule_handle(sid).describe()
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return []
        raise
    action = desc.schedule.action
    if not isinstance(action, ScheduleActionStartWorkflow) or action.task_queue is None:
        return []
    found: list[OffTargetRun] = []
    for running in desc.info.running_actions:
        if not isinstance(running, ScheduleActionExecutionStartWorkflow):
            continue
        run = await _off_target(client, sid, running.workflow_id, action.task_queue, STRANDED_AFTER)
        if run is not None:
            found.append(run)
    return found


async def _off_target(
    client: Client, sid: str, workflow_id: str, target: str, stranded_after: timedelta
) -> OffTargetRun | None:
    try:
        wf = await client.get_workflow_handle(workflow_id).describe()  # the chain's latest run
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return None
        raise
    if wf.status != WorkflowExecutionStatus.RUNNING:
        return None
    raw = wf.raw_description
    attempts = raw.pending_workflow_task.attempt if raw.HasField("pending_workflow_task") else 0
    if attempts >= FAILING_ATTEMPTS:
        # No worker present can run its next task: the code that wrote its history is gone (a rollback to a release
        # without the linger, docs/design.md "Task queues"). Temporal would retry that task until the run times out.
        since = raw.pending_workflow_task.original_scheduled_time.ToDatetime(tzinfo=UTC)
        return OffTargetRun(
            sid, workflow_id, wf.run_id, wf.task_queue, target, datetime.now(UTC) - since, True, failing=attempts
        )
    if wf.task_queue == target:
        return None
    queued: datetime | None = None
    if (
        raw.HasField("pending_workflow_task")
        and raw.pending_workflow_task.state == PendingWorkflowTaskState.PENDING_WORKFLOW_TASK_STATE_SCHEDULED
    ):
        queued = raw.pending_workflow_task.scheduled_time.ToDatetime(tzinfo=UTC)
    now = datetime.now(UTC)
    last_poll = await _last_poll(client, client.namespace, wf.task_queue) if queued is not None else None
    stranded = is_stranded(
        task_queue=wf.task_queue,
        target_queue=target,
        task_scheduled_at=queued,
        last_poll_at=last_poll,
        now=now,
        stranded_after=stranded_after,
    )
    waiting = now - queued if queued is not None else None
    return OffTargetRun(sid, workflow_id, wf.run_id, wf.task_queue, target, waiting, stranded)


async def find_stranded(client: Client) -> list[OffTargetRun]:
    """The stranded runs among `find_off_target`'s."""
    return [r for r in await find_off_target(client) if r.stranded]


async def heal_stranded(client: Client, schedule_ids: Iterable[str] | None = None) -> HealReport:
    """Terminate every stranded run (module docstring) of xnovu's schedules (or of `schedule_ids` among them), each
    with a reason naming both queues. A run that moved on meanwhile (continued, closed) is left alone: the terminate
    names its run."""
    report = HealReport([], [])
    for run in await find_off_target(client, schedule_ids):
        if not run.stranded:
            report.left.append(run)
            continue
        reason = (
            FAILING_REASON.format(attempts=run.failing)
            if run.failing
            else HEAL_REASON.format(queue=run.task_queue, target=run.target_queue)
        )
        try:
            await client.get_workflow_handle(run.workflow_id, run_id=run.run_id).terminate(reason=reason)
        except RPCError as exc:
            if exc.status != RPCStatusCode.NOT_FOUND:
                raise
            continue  # it closed or continued as new since it was described
        log.warning(
            "stranded schedule run terminated",
            extra={
                "schedule_id": run.schedule_id,
                "workflow_id": run.workflow_id,
                "run_id": run.run_id,
                "task_queue": run.task_queue,
                "target_queue": run.target_queue,
                "waited_s": round((run.waiting or timedelta(0)).total_seconds(), 1),
            },
        )
        report.terminated.append(run)
    return report
