"""The heal of stranded schedule runs (xnovu/temporal/stranded.py) on the real stack leaves healthy runs alone, and a
new worker serves a chain the previous release left open on the main queue (the forward direction of a release that
moves the polls' queue). The rollback it heals: tests/integration/test_attack17b.py, finding 1."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest
from temporalio.client import Client

from tests.support import Env, eventually
from xnovu.core.models import PollKind
from xnovu.temporal.connection import connect_temporal
from xnovu.temporal.options import poll_task_queue
from xnovu.temporal.schedules import ensure_schedules, schedule_id
from xnovu.temporal.stranded import find_off_target, heal_stranded


async def _open_runs(client: Client) -> list[Any]:
    """The open runs of the three poll schedules (the latest run of each chain), with their task queues."""
    runs = []
    for kind in PollKind:
        for a in (await client.get_schedule_handle(schedule_id(kind)).describe()).info.running_actions:
            runs.append(await client.get_workflow_handle(a.workflow_id).describe())
    return runs


async def test_the_heal_leaves_a_restarting_worker_s_runs_and_a_served_queue_s(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker of this release stops (a restart, or a worker still starting): the runs its schedules open on the
    -polls queue wait there for it, unpolled, and are not healed, however long they wait (they are on the queue their
    schedules target). Then, while this release's worker serves both queues, the previous release's bootstrap moves
    the schedules to the main queue (a rolling rollback): the runs left on -polls are served, and the heal, asked
    every 200 ms, terminates none of them."""
    monkeypatch.setattr("xnovu.temporal.stranded.STRANDED_AFTER", timedelta(seconds=1))
    wf = await env.workflow("welcome")
    client = await connect_temporal(env.settings)
    polls = poll_task_queue(env.settings.temporal_task_queue)
    async with env.worker(wakeup_enabled=False):
        pass
    waiting = await eventually(lambda: _open_runs(client), timeout=10, interval=0.2)
    await asyncio.sleep(2)  # twice STRANDED_AFTER, unpolled
    assert {r.task_queue for r in waiting} == {polls}
    assert await find_off_target(client) == [] and (await heal_stranded(client)).terminated == []

    async with env.worker(wakeup_enabled=False):
        with monkeypatch.context() as previous:
            previous.setattr("xnovu.temporal.schedules.poll_task_queue", lambda queue: queue)
            await ensure_schedules(client, env.settings)  # the previous release's bootstrap
        rows = await env.insert(wf, 3)
        terminated = []
        for _ in range(15):
            terminated += (await heal_stranded(client)).terminated
            await asyncio.sleep(0.2)
        await eventually(lambda: env.all_in(rows, "SENT"), timeout=10, interval=0.2)
    assert terminated == []


async def test_a_new_worker_serves_a_chain_the_previous_release_left_open_on_the_main_queue(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The forward direction: the previous release's workers stop with a poll run open on TEMPORAL_TASK_QUEUE; this
    release's first worker moves the schedules to -polls, and its main worker (which still registers the poll
    workflow) runs the open one to its end, so nothing waits for a run timeout and nothing needs healing."""
    wf = await env.workflow("welcome")
    client = await connect_temporal(env.settings)
    with monkeypatch.context() as previous:
        previous.setattr("xnovu.temporal.schedules.poll_task_queue", lambda queue: queue)
        previous.setattr("xnovu.worker.composition.build_poll_worker", lambda *a, **k: None)
        async with env.worker(wakeup_enabled=False):
            pass
    [left, *_] = await eventually(lambda: _open_runs(client), timeout=10, interval=0.2)
    assert left.task_queue == env.settings.temporal_task_queue
    [row] = await env.insert(wf)
    async with env.worker(wakeup_enabled=False):
        await eventually(lambda: env.all_in([row], "SENT"), timeout=10, interval=0.2)
        done = await client.get_workflow_handle(left.id, run_id=left.run_id).describe()
        action = (await client.get_schedule_handle(schedule_id(PollKind.NEW)).describe()).schedule.action
    assert done.status is not None and done.status.name == "COMPLETED", done.status
    assert getattr(action, "task_queue", None) == poll_task_queue(env.settings.temporal_task_queue)
