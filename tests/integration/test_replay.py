"""Real histories of the per-notification workflows replay against today's code (xnovu/temporal/workflows.py).

Both run outside Temporal's sandbox, so their determinism is proven here rather than watched at run time: a run on
the real stack (an immediate row and a scheduled one, which waits on a durable timer) is recorded, and Temporal's
Replayer re-executes every history with the workflow classes the worker registers.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from temporalio import workflow
from temporalio.client import Client, WorkflowHistory
from temporalio.worker import Replayer
from temporalio.workflow import NondeterminismError

from tests.support import Env, eventually
from xnovu.core.models import NotificationInput, TriggerResult, child_id
from xnovu.temporal.workflows import WORKFLOWS


async def _histories(client: Client, ids: list[int]) -> list[WorkflowHistory]:
    """Each notification's child history and the history of the poll run that started it."""
    histories: list[WorkflowHistory] = []
    for nid in ids:
        child = client.get_workflow_handle(child_id(nid, 1))
        desc = await child.describe()
        histories.append(await child.fetch_history())
        assert desc.parent_id is not None, "started by a poll"
        parent = client.get_workflow_handle(desc.parent_id, run_id=desc.parent_run_id)
        histories.append(await parent.fetch_history())
    return histories


async def test_recorded_histories_replay_deterministically(env: Env) -> None:
    wf = await env.workflow("welcome")
    now_ids = await env.insert(wf, 2)
    [later] = await env.insert(wf, scheduled_for=datetime.now(UTC) + timedelta(seconds=3))
    ids = [*now_ids, later]
    async with env.worker() as manager:
        await eventually(lambda: env.all_in(ids, "SENT"), timeout=60)
        assert manager.client is not None
        histories = await _histories(manager.client, ids)
    types = {h.events[0].workflow_execution_started_event_attributes.workflow_type.name for h in histories}
    assert types == {"NotificationTriggerWorkflow", "PollNotificationsWorkflow"}
    timers = [h for h in histories if any(e.HasField("timer_started_event_attributes") for e in h.events)]
    assert timers, "the scheduled row's history (a durable timer) is among those replayed"

    replayer = Replayer(workflows=WORKFLOWS)
    async with replayer.workflow_replay_iterator(_iterate(histories)) as results:
        async for result in results:
            assert result.replay_failure is None, f"{result.history.workflow_id}: {result.replay_failure}"


@workflow.defn(name="NotificationTriggerWorkflow", sandboxed=False)
class ChangedTriggerWorkflow:
    """Today's child with one extra step first: what a careless edit would ship."""

    @workflow.run
    async def run(self, inp: NotificationInput) -> TriggerResult:
        await workflow.sleep(1)
        raise AssertionError("never reached in replay")


async def test_a_changed_workflow_fails_the_replay(env: Env) -> None:
    """The replay above can fail: the same recorded history against different code raises."""
    wf = await env.workflow("welcome")
    [nid] = await env.insert(wf)
    async with env.worker() as manager:
        await eventually(lambda: env.all_in([nid], "SENT"), timeout=30)
        assert manager.client is not None
        history = await manager.client.get_workflow_handle(child_id(nid, 1)).fetch_history()
    with pytest.raises(NondeterminismError):
        await Replayer(workflows=[ChangedTriggerWorkflow]).replay_workflow(history)


async def _iterate(histories: list[WorkflowHistory]) -> AsyncIterator[WorkflowHistory]:
    for h in histories:
        yield h
