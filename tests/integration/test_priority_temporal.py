"""Priority on the Temporal side (docs/priority.md "Temporal priority and fairness keys"): every notification
workflow carries Temporal's priority key of its row's urgency, its enterprise as the fairness key and the search
attribute `XnovuPriority`, whether a poll or a batch trigger started it; and a poll history recorded before this
replays on the new code.

Run: pytest tests/integration/test_priority_temporal.py --basetemp=/tmp/pt-prioops
"""

from __future__ import annotations

import dataclasses
import itertools
import uuid

from temporalio import activity, workflow
from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest, UpdateTaskQueueConfigRequest
from temporalio.client import Client, WorkflowHandle
from temporalio.common import Priority, SearchAttributePair, TypedSearchAttributes
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.worker import Replayer, Worker

from tests.support import Env, eventually
from xnovu.core.models import (
    ClaimBatch,
    ClaimedNotification,
    MultipleTriggerRequest,
    NotificationInput,
    Outcome,
    PollInput,
    PollKind,
    PollResult,
    TriggerRequest,
    TriggerResult,
    child_id,
)
from xnovu.core.priority import temporal_priority_key
from xnovu.db.repository import NewNotification, insert_notifications
from xnovu.temporal import searchattrs
from xnovu.temporal.activities import XnovuActivities
from xnovu.temporal.bootstrap import bootstrap
from xnovu.temporal.connection import connect_temporal
from xnovu.temporal.workflows import (
    ALREADY_STARTED_RETRIES,
    CAPACITY_WAIT,
    CAPACITY_WAIT_MAX,
    CLAIM_RETRY,
    CLAIM_TIMEOUT,
    RETRY_ALREADY_STARTED,
    URGENT_ROOM_WAIT,
    WORKFLOWS,
    NotificationTriggerWorkflow,
    PollNotificationsWorkflow,
    TriggerMultipleNotificationsWorkflow,
)

ENTERPRISE = "6f1c2d3e-4a5b-4c6d-8e9f-0a1b2c3d4e5f"
URGENT = ClaimedNotification(9_001, 1, "fire", "fire-alarm", ENTERPRISE, priority=2)
NORMAL = ClaimedNotification(9_002, 1, "newsletter", "news", None, priority=0)


@activity.defn(name="claim_notifications")
async def claim_two(kind: PollKind) -> ClaimBatch:
    """The claim as the claim SQL returns it (urgency filled): one urgent row of an enterprise, one normal without."""
    return ClaimBatch(rows=[URGENT, NORMAL], batch_size=100)


_fresh_ids = itertools.count(9_100, 10)


@activity.defn(name="claim_notifications")
async def claim_two_fresh(kind: PollKind) -> ClaimBatch:
    """As claim_two, with ids no earlier poll used."""
    base = next(_fresh_ids)
    return ClaimBatch(
        rows=[
            dataclasses.replace(URGENT, notification_id=base),
            dataclasses.replace(NORMAL, notification_id=base + 1),
        ],
        batch_size=100,
    )


@activity.defn(name="trigger_notification_by_id")
async def sent(request: TriggerRequest) -> TriggerResult:
    return TriggerResult(request.notification_id, Outcome.SENT, "SENT", attempt=request.attempt)


async def _priority_of(handle: WorkflowHandle[object, object]) -> tuple[Priority | None, int | None]:
    desc = await handle.describe()
    raw = desc.raw_description.workflow_execution_info.priority
    attrs = desc.typed_search_attributes
    return (
        Priority(priority_key=raw.priority_key or None, fairness_key=raw.fairness_key or None),
        attrs.get(searchattrs.PRIORITY),
    )


async def _ids_matching(client: Client, query: str) -> set[str]:
    return {w.id async for w in client.list_workflows(query)}


async def test_a_poll_starts_each_child_with_its_priority_key_fairness_key_and_search_attribute(env: Env) -> None:
    client = await connect_temporal(env.settings)
    async with env.worker(poll_interval_ms=3_600_000, wakeup_enabled=False):  # bootstrap: namespace, attributes
        queue = f"prio-{uuid.uuid4().hex[:6]}"
        async with Worker(client, task_queue=queue, workflows=WORKFLOWS, activities=[claim_two, sent]):
            poll = await client.start_workflow(
                PollNotificationsWorkflow.run, PollInput(PollKind.NEW), id=f"poll-{queue}", task_queue=queue
            )
            assert (await poll.result()).started == 2
            urgent = client.get_workflow_handle(child_id(URGENT.notification_id, 1))
            normal = client.get_workflow_handle(child_id(NORMAL.notification_id, 1))
            await urgent.result()
            await normal.result()
    assert await _priority_of(urgent) == (Priority(priority_key=1, fairness_key=ENTERPRISE), 2)
    assert await _priority_of(normal) == (Priority(priority_key=3, fairness_key=searchattrs.NO_ENTERPRISE_KEY), 0)

    # What an operator types into the Web UI's search box.
    found = await eventually(lambda: _ids_matching(client, f"TaskQueue = '{queue}' AND XnovuPriority > 0"))
    assert found == {child_id(URGENT.notification_id, 1)}


async def _urgent_row(env: Env, sort_order: int) -> int:
    """A notification of ENTERPRISE whose typ_notification_priority has `sort_order` (the trigger of migration 0011
    keeps its urgency on the row)."""
    wf = await env.workflow("fire-alarm")
    [nid] = await insert_notifications(
        env.repo, wf, [NewNotification("fire", [str(uuid.uuid4())], {"floor": 3})], enterprise_id=ENTERPRISE
    )
    priority_id = await env.repo.pool.fetchval(
        "INSERT INTO notify.typ_notification_priority (name, sort_order, publish_status) "
        "VALUES ('emergency', $1, 'PUBLISH') RETURNING id",
        sort_order,
    )
    await env.execute(
        "UPDATE notify.ent_notification SET typ_notification_priority_id = $2 WHERE id = $1", nid, priority_id
    )
    assert (await env.row(nid))["xnovu_priority"] == sort_order
    return nid


async def test_a_row_claimed_by_a_real_poll_starts_its_child_with_its_priority(env: Env) -> None:
    """The poll path end to end, no stub: the claim SQL fills ClaimedNotification.priority from the row's urgency,
    and the poll starts the child with its priority key, its enterprise as fairness key and XnovuPriority."""
    nid = await _urgent_row(env, 2)
    wf = await env.workflow("welcome")
    [plain] = await insert_notifications(env.repo, wf, [NewNotification("news", [str(uuid.uuid4())], {})])
    async with env.worker() as manager:  # the real poll schedules and claim
        assert manager.client is not None
        await eventually(lambda: env.all_in([nid, plain], "SENT"), timeout=30)
        urgent = manager.client.get_workflow_handle(child_id(nid, 1))
        normal = manager.client.get_workflow_handle(child_id(plain, 1))
        assert (await urgent.describe()).parent_id is not None, "started by a poll, not a manual trigger"
        assert await _priority_of(urgent) == (
            Priority(priority_key=temporal_priority_key(2), fairness_key=ENTERPRISE),
            2,
        )
        assert await _priority_of(normal) == (
            Priority(priority_key=temporal_priority_key(0), fairness_key=searchattrs.NO_ENTERPRISE_KEY),
            0,
        )


async def test_a_batch_trigger_starts_the_attempt_with_its_rows_priority(env: Env) -> None:
    nid = await _urgent_row(env, 1)
    async with env.worker(poll_interval_ms=3_600_000, wakeup_enabled=False) as manager:
        assert manager.client is not None
        batch = await manager.client.start_workflow(
            TriggerMultipleNotificationsWorkflow.run,
            MultipleTriggerRequest([nid]),
            id=f"batch-{uuid.uuid4().hex[:6]}",
            task_queue=env.settings.temporal_task_queue,
        )
        [result] = await batch.result()
        assert result.outcome is Outcome.SENT
        child = manager.client.get_workflow_handle(child_id(nid, 1))
        assert await _priority_of(child) == (
            Priority(priority_key=temporal_priority_key(1), fairness_key=ENTERPRISE),
            1,
        )


async def test_a_manual_trigger_starts_the_attempt_with_its_rows_priority(env: Env) -> None:
    from xnovu.api import NotificationClient

    nid = await _urgent_row(env, 2)
    async with env.worker(poll_interval_ms=3_600_000, wakeup_enabled=False):
        async with NotificationClient(env.settings) as api:
            _, result = await api.trigger_and_wait(nid)
            assert result.outcome is Outcome.SENT
            client = await api.client()
            child = client.get_workflow_handle(child_id(nid, 1))
            assert await _priority_of(child) == (Priority(priority_key=1, fairness_key=ENTERPRISE), 2)


@workflow.defn(name="PollNotificationsWorkflow", sandboxed=False)
class PreviousPollWorkflow(PollNotificationsWorkflow):
    """PollNotificationsWorkflow as c1c2e12 shipped it: children started without a priority or XnovuPriority."""

    @workflow.run
    async def run(self, inp: PollInput) -> PollResult:
        return await super().run(inp)

    async def _start(self, row: ClaimedNotification) -> bool:
        for wait in (*ALREADY_STARTED_RETRIES, None):
            try:
                await workflow.start_child_workflow(
                    "NotificationTriggerWorkflow",
                    NotificationInput(row.notification_id, row.attempt, row.scheduled_for),
                    id=child_id(row.notification_id, row.attempt),
                    task_queue=workflow.info().task_queue,
                    parent_close_policy=workflow.ParentClosePolicy.ABANDON,
                    search_attributes=TypedSearchAttributes(
                        [
                            SearchAttributePair(searchattrs.NOTIFICATION_ID, row.notification_id),
                            *(
                                [SearchAttributePair(searchattrs.WORKFLOW_KEY, row.workflow_key)]
                                if row.workflow_key
                                else []
                            ),
                        ]
                    ),
                    memo=searchattrs.memo_for_notification(row.name),
                )
            except WorkflowAlreadyStartedError:
                if wait is None or not workflow.patched(RETRY_ALREADY_STARTED):
                    return False
                await workflow.sleep(wait)
            else:
                return True
        return False


async def test_a_poll_history_recorded_before_priority_replays_on_the_new_code(env: Env) -> None:
    """Priority and the new search attribute are not part of a child start's replay check: a poll that was open
    across the upgrade goes on (no `workflow.patched` needed), and so does one recorded by the new code."""
    client = await connect_temporal(env.settings)
    histories = []
    async with env.worker(poll_interval_ms=3_600_000, wakeup_enabled=False):
        for poll_class in (PreviousPollWorkflow, PollNotificationsWorkflow):
            queue = f"old-{uuid.uuid4().hex[:6]}"
            workflows = [poll_class, NotificationTriggerWorkflow]
            async with Worker(client, task_queue=queue, workflows=workflows, activities=[claim_two_fresh, sent]):
                poll = await client.start_workflow(
                    "PollNotificationsWorkflow", PollInput(PollKind.NEW), id=f"poll-{queue}", task_queue=queue
                )
                assert (await poll.result())["started"] == 2
                histories.append(await poll.fetch_history())
    for history in histories:
        result = await Replayer(workflows=WORKFLOWS).replay_workflow(history, raise_on_replay_failure=False)
        assert result.replay_failure is None, f"{history.workflow_id}: {result.replay_failure!r}"


async def _weights(client: Client, queue: str) -> dict[str, float]:
    desc = await client.workflow_service.describe_task_queue(
        DescribeTaskQueueRequest(
            namespace=client.namespace,
            task_queue=TaskQueue(name=queue),
            task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
            report_config=True,
        )
    )
    return {k: round(v, 3) for k, v in desc.config.fairness_weight_overrides.items()}


async def test_bootstrap_sets_fair_share_weights_as_the_task_queues_fairness_weights(env: Env) -> None:
    """Where the server has fairness on, it shares out the children by FAIR_SHARE_WEIGHTS too (a weight override of
    the task queue wins over the workflow's own): set at bootstrap, and kept in step with the setting."""
    queue = env.settings.temporal_task_queue
    first = env.settings.model_copy(update={"fair_share_weights": f"{ENTERPRISE.upper()}=3,none=2"})
    report = await bootstrap(await connect_temporal(first), first)
    client = await connect_temporal(first)
    assert report.fairness_weights == {ENTERPRISE: 3.0, "none": 2.0}
    assert await _weights(client, queue) == {ENTERPRISE: 3.0, "none": 2.0}
    await client.workflow_service.update_task_queue_config(
        UpdateTaskQueueConfigRequest(
            namespace=client.namespace,
            identity="an operator",
            task_queue=queue,
            task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
            set_fairness_weight_overrides={"gold": 5.0},
        )
    )
    second = env.settings.model_copy(update={"fair_share_weights": f"{ENTERPRISE}=1.5"})
    await bootstrap(client, second)
    assert await _weights(client, queue) == {ENTERPRISE: 1.5, "gold": 5.0}  # none unset, the operator's key kept


_capacity_calls = itertools.count()


@activity.defn(name="claim_notifications")
async def claim_full_then_empty(kind: PollKind) -> ClaimBatch:
    """Odd calls: rows wait, the normal window is full, the urgent one has room; even calls: nothing due."""
    if next(_capacity_calls) % 2 == 0:
        return ClaimBatch(rows=[], batch_size=100, capacity_limited=True, urgent_room=True)
    return ClaimBatch(rows=[], batch_size=100)


@workflow.defn(name="PollNotificationsWorkflow", sandboxed=False)
class BackOffPollWorkflow(PollNotificationsWorkflow):
    """PollNotificationsWorkflow's run as shipped before the urgent-room cap: the back-off ignores urgent room."""

    @workflow.run
    async def run(self, inp: PollInput) -> PollResult:
        batch = await workflow.execute_local_activity_method(
            XnovuActivities.claim_notifications,
            inp.kind,
            start_to_close_timeout=CLAIM_TIMEOUT,
            retry_policy=CLAIM_RETRY,
        )
        if batch.capacity_limited:
            waits = 0 if batch.rows else inp.capacity_waits + 1
            await workflow.sleep(min(CAPACITY_WAIT * 2 ** min(waits, 8), CAPACITY_WAIT_MAX))
            workflow.continue_as_new(PollInput(inp.kind, inp.batches_before + 1, waits))
        return PollResult(inp.kind, batches=inp.batches_before + 1)


async def test_the_urgent_room_cap_of_the_capacity_back_off_keeps_recorded_poll_histories_replayable(env: Env) -> None:
    """A poll that found the normal window full but urgent room free sleeps at most URGENT_ROOM_WAIT (1 s) instead of
    its back-off (2 s here). The shorter timer is behind `workflow.patched`: a history recorded before (a 2 s timer)
    replays on the new code, as does one recorded by it (a 1 s timer and the patch marker)."""
    client = await connect_temporal(env.settings)
    timers: list[list[float]] = []
    histories = []
    async with env.worker(poll_interval_ms=3_600_000, wakeup_enabled=False):
        for poll_class in (BackOffPollWorkflow, PollNotificationsWorkflow):
            queue = f"backoff-{uuid.uuid4().hex[:6]}"
            async with Worker(client, task_queue=queue, workflows=[poll_class], activities=[claim_full_then_empty]):
                poll = await client.start_workflow(
                    "PollNotificationsWorkflow", PollInput(PollKind.NEW), id=f"poll-{queue}", task_queue=queue
                )
                await client.get_workflow_handle(poll.id).result()  # the chain's last run
                # The first run: the claim, the back-off, continue-as-new.
                first = client.get_workflow_handle(poll.id, run_id=poll.first_execution_run_id)
                history = await first.fetch_history()
            histories.append(history)
            timers.append(
                [
                    e.timer_started_event_attributes.start_to_fire_timeout.ToTimedelta().total_seconds()
                    for e in history.events
                    if e.HasField("timer_started_event_attributes")
                ]
            )
    assert timers == [[2.0], [URGENT_ROOM_WAIT.total_seconds()]]
    for history in histories:
        result = await Replayer(workflows=WORKFLOWS).replay_workflow(history, raise_on_replay_failure=False)
        assert result.replay_failure is None, f"{history.workflow_id}: {result.replay_failure!r}"
