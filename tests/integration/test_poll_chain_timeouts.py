"""A long drain or back-pressure chain is never killed (issue 16, finding 6; README "Lease, fencing and back-pressure").

A poll run that finds a full batch, or rows it cannot claim because as much is in flight as can be sent, continues
as new; such a chain may rightly last for hours. A timeout on the schedule's action that covers the whole chain
(`execution_timeout`, one hour in earlier releases) killed it, and its last claims waited for their lease. The
schedules bound each run instead (`run_timeout`, xnovu/temporal/schedules.py POLL_RUN_TIMEOUT), on the real
Temporal dev server here, with timeouts scaled to seconds.
"""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

from temporalio.client import (
    Client,
    ScheduleActionStartWorkflow,
    ScheduleState,
    ScheduleUpdate,
    ScheduleUpdateInput,
    WorkflowExecutionStatus,
)

from tests.support import Env, eventually
from xnovu.core.models import PollKind, schedule_id
from xnovu.temporal.bootstrap import bootstrap
from xnovu.temporal.connection import connect_temporal
from xnovu.temporal.schedules import POLL_RUN_TIMEOUT, RULES_SYNC_ID, RULES_SYNC_RUN_TIMEOUT, desired_schedule

#: The chain-wide timeout of earlier releases (one hour), scaled down for the test.
OLD_CHAIN_TIMEOUT = timedelta(seconds=3)
#: The per-run bound, scaled down: above one back-pressure run (its claim and at most CAPACITY_WAIT_MAX = 8 s).
RUN_TIMEOUT = timedelta(seconds=20)

#: Five rows in flight: with POLL_BATCH_SIZE=1 the deployment may have 5 claimed (CLAIM_BATCHES_IN_FLIGHT), so a due
#: row finds no room and the new poll backs off and continues as new for as long as they stay.
HOLD = """
INSERT INTO notify.ent_notification
  (name, publish_status, notification_workflow_id, notification_status, payload, recipients, attempts, next_attempt_at)
SELECT 'held ' || g, 'PUBLISH', $1, 'PROCESSING', '{}', ARRAY[gen_random_uuid()], 1, now() + interval '1 hour'
FROM generate_series(1, 5) AS g
RETURNING id
"""


async def test_bootstrap_gives_installed_schedules_a_run_timeout_and_no_chain_timeout(env: Env) -> None:
    client = await connect_temporal(env.settings)
    await bootstrap(client, env.settings)  # the namespace and the schedules
    for kind in PollKind:  # turned back into what an earlier release installed (paused by an operator)
        old = desired_schedule(
            env.settings,
            kind,
            ScheduleState(paused=True, note="paused by the operator"),
            run_timeout=None,
            execution_timeout=timedelta(hours=1),
        )
        await client.get_schedule_handle(schedule_id(kind)).update(lambda _, old=old: ScheduleUpdate(schedule=old))
        action = (await client.get_schedule_handle(schedule_id(kind)).describe()).schedule.action
        assert isinstance(action, ScheduleActionStartWorkflow) and action.execution_timeout == timedelta(hours=1)

    report = await bootstrap(client, env.settings)

    for kind in PollKind:
        assert report.schedules[schedule_id(kind)] == "updated"
        desc = await client.get_schedule_handle(schedule_id(kind)).describe()
        action = desc.schedule.action
        assert isinstance(action, ScheduleActionStartWorkflow)
        assert action.execution_timeout is None, "no timeout over the whole continue-as-new chain"
        assert action.run_timeout == POLL_RUN_TIMEOUT
        assert desc.schedule.state.paused and desc.schedule.state.note == "paused by the operator"
    sync = (await client.get_schedule_handle(RULES_SYNC_ID).describe()).schedule.action
    assert isinstance(sync, ScheduleActionStartWorkflow)
    assert sync.execution_timeout is None and sync.run_timeout == RULES_SYNC_RUN_TIMEOUT
    again = await bootstrap(client, env.settings)
    assert set(again.schedules.values()) == {"unchanged"}, again.schedules


async def _set_action(client: Client, env: Env, **timeouts: timedelta | None) -> None:
    def update(u: ScheduleUpdateInput) -> ScheduleUpdate:
        state = u.description.schedule.state
        return ScheduleUpdate(schedule=desired_schedule(env.settings, PollKind.NEW, state, **timeouts))

    await client.get_schedule_handle(schedule_id(PollKind.NEW)).update(update)


async def _chain_runs(client: Client, wid: str) -> tuple[WorkflowExecutionStatus | None, str, timedelta | None]:
    """(status, run id, run timeout) of the chain's latest run."""
    desc = await client.get_workflow_handle(wid).describe()
    config = desc.raw_description.execution_config
    run_timeout = config.workflow_run_timeout.ToTimedelta() if config.HasField("workflow_run_timeout") else None
    return desc.status, desc.run_id or "", run_timeout


async def test_a_back_pressure_chain_outlives_the_chain_wide_timeout_it_would_have_had(env: Env) -> None:
    wf = await env.workflow("welcome")
    async with env.worker(poll_batch_size=1) as manager:
        assert manager.client is not None
        client = manager.client
        # The action as earlier releases had it, scaled: one timeout over the whole chain.
        await _set_action(client, env, run_timeout=None, execution_timeout=OLD_CHAIN_TIMEOUT)
        await asyncio.sleep(2)  # runs started before the update end at once: nothing is due yet
        held = [r["id"] for r in await env.repo.pool.fetch(HOLD, wf)]
        [due] = await env.insert(wf)

        async def a_timed_out_chain() -> bool:
            query = "WorkflowType = 'PollNotificationsWorkflow' AND ExecutionStatus = 'TimedOut'"
            return any([w async for w in client.list_workflows(query)])

        await eventually(a_timed_out_chain, timeout=40)
        assert (await env.row(due))["status"] == "PENDING", "the killed chain never claimed the due row"

        # Now as xnovu installs it: each run bounded, the chain not.
        await _set_action(client, env, run_timeout=RUN_TIMEOUT, execution_timeout=None)

        async def a_new_chain() -> tuple[str, str] | None:
            desc = await client.get_schedule_handle(schedule_id(PollKind.NEW)).describe()
            for action in desc.info.running_actions:
                wid, first = action.workflow_id, action.first_execution_run_id
                _, _, run_timeout = await _chain_runs(client, wid)
                if run_timeout == RUN_TIMEOUT:
                    return wid, first
            return None

        wid, first = await eventually(a_new_chain, timeout=40)
        started = (await client.get_workflow_handle(wid, run_id=first).describe()).start_time
        assert started is not None
        # Outlive the old chain-wide timeout three times over, through several continue-as-new runs.
        outlive = 3 * OLD_CHAIN_TIMEOUT.total_seconds()
        while time.time() - started.timestamp() < outlive:
            await asyncio.sleep(0.5)
        status, run_id, _ = await _chain_runs(client, wid)
        assert status is WorkflowExecutionStatus.RUNNING, f"the chain ended ({status}) after {outlive:.0f} s"
        assert run_id != first, "the chain continued as new"
        assert (await env.row(due))["status"] == "PENDING"

        # Room again: the same chain claims the due row and ends.
        await env.execute("UPDATE notify.ent_notification SET notification_status = 'SENT' WHERE id = ANY($1)", held)
        await eventually(lambda: env.all_in([due], "SENT"), timeout=30)

        async def chain_done() -> bool:
            return (await _chain_runs(client, wid))[0] is WorkflowExecutionStatus.COMPLETED

        await eventually(chain_done, timeout=30)
