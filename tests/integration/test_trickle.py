"""A trickle of single-row commits (issue 18): a drained new-rows poll lingers for wake signals, so each commit costs
a signal and a claim instead of a Schedule run and a claim, while it is still sent within about a second.

Real Postgres (the LISTEN connection), real Temporal dev server (schedules, signals, the query, histories), real HTTP
emulator. Hourly ticks: every run counted was started by a wake-up.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHistory
from temporalio.worker import Replayer

from tests.integration.test_wakeup import NO_TICKS, listener, schedule_actions, settled
from tests.support import Env, eventually
from xnovu.devtools.bench.cost import RunCost
from xnovu.temporal.options import poll_task_queue
from xnovu.temporal.workflows import WORKFLOWS


async def _histories(client: Client, query: str) -> list[WorkflowHistory]:
    runs = [wf async for wf in client.list_workflows(query)]
    return [await client.get_workflow_handle(wf.id, run_id=wf.run_id).fetch_history() for wf in runs]


def _cost(histories: list[WorkflowHistory]) -> RunCost:
    cost = RunCost()
    for h in histories:
        first = h.events[0].workflow_execution_started_event_attributes
        cost.add(
            [EventType.Name(e.event_type) for e in h.events],
            scheduled="TemporalScheduledById" in first.search_attributes.indexed_fields,
        )
    return cost


async def test_twenty_commits_at_four_a_second_start_a_few_poll_runs_and_are_each_sent_within_a_second(
    env: Env,
) -> None:
    wf = await env.workflow("welcome")
    async with env.worker(**NO_TICKS) as manager:
        assert manager.client is not None
        await eventually(lambda: settled(manager), timeout=30)
        taken, _ = await schedule_actions(manager)
        since = datetime.now(UTC)
        committed: dict[int, float] = {}
        for _ in range(20):
            [nid] = await env.insert(wf)
            committed[nid] = time.time()
            await asyncio.sleep(0.25)
        ids = list(committed)
        await eventually(lambda: env.all_in(ids, "SENT"), timeout=30, interval=0.05)
        await eventually(lambda: settled(manager), timeout=30)  # the lingering run has closed
        runs = (await schedule_actions(manager))[0] - taken
        rows = await env.repo.pool.fetch(
            "SELECT id, processed_at FROM notify.ent_notification WHERE id = ANY($1::bigint[])", ids
        )
        queues = f'TaskQueue = "{poll_task_queue(env.settings.temporal_task_queue)}"'
        polls = await _histories(manager.client, f'{queues} AND StartTime >= "{since.isoformat()}"')
        children = await _histories(
            manager.client,
            f'TaskQueue = "{env.settings.temporal_task_queue}" AND WorkflowType = "NotificationTriggerWorkflow"'
            f' AND StartTime >= "{since.isoformat()}"',
        )
        signals = listener(manager).linger_signals_sent
    delays = sorted(r["processed_at"].timestamp() - committed[r["id"]] for r in rows)
    cost = _cost(polls + children)
    print(
        f"\n20 commits at 4/s: {runs} poll runs, {signals} wake signals, commit -> SENT median "
        f"{delays[10]:.2f} s max {delays[-1]:.2f} s, {cost.actions / 20:.2f} actions per notification"
    )
    assert runs <= 4, f"20 commits at 4/s started {runs} poll runs (one each without linger)"
    assert 5 <= signals <= 12, f"{signals}: the later commits reached the lingering run, two or so per signal"
    assert delays[-1] < 2.0, f"commit -> SENT took up to {delays[-1]:.2f} s"
    # 7 without linger. The bench's 4.5 target is for a longer trickle: its first two runs weigh less there.
    assert cost.actions / 20 <= 5.0, f"{cost.actions / 20:.2f} estimated actions per notification"
    assert env.stats()["deliveries"] == 20 and env.stats()["duplicate_deliveries"] == 0
    # The lingering run's history (signals, claims in later workflow tasks) replays on the code that wrote it.
    assert any(e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED for h in polls for e in h.events)
    async with Replayer(workflows=WORKFLOWS).workflow_replay_iterator(_iter(polls)) as results:
        async for result in results:
            assert result.replay_failure is None, f"{result.history.workflow_id}: {result.replay_failure}"


async def _iter(histories: list[WorkflowHistory]):  # type: ignore[no-untyped-def]
    for h in histories:
        yield h


async def test_a_lone_commit_closes_its_poll_run_at_once_as_before(env: Env) -> None:
    """A commit a minute: its run does not linger (no timer, no open run), so it costs what it cost before."""
    wf = await env.workflow("welcome")
    async with env.worker(**NO_TICKS) as manager:
        assert manager.client is not None
        await eventually(lambda: settled(manager), timeout=30)
        since = datetime.now(UTC)
        ids = await env.insert(wf)
        await eventually(lambda: env.all_in(ids, "SENT"), timeout=10, interval=0.05)
        await eventually(lambda: settled(manager), timeout=5, interval=0.05)
        queues = f'TaskQueue = "{poll_task_queue(env.settings.temporal_task_queue)}"'
        polls = await _histories(manager.client, f'{queues} AND StartTime >= "{since.isoformat()}"')
    assert len(polls) == 1
    assert not any(e.event_type == EventType.EVENT_TYPE_TIMER_STARTED for e in polls[0].events)


async def test_an_urgent_commit_is_not_held_back_by_the_fold_of_ordinary_ones(env: Env) -> None:
    """WAKEUP_DEBOUNCE_MS folds ordinary commits into one wake-up per window (a cost/latency trade); an urgent commit
    (migration 0015's 'urgent' beside its 'new') cuts the pending wait to URGENT_DEBOUNCE_S and takes the folded
    ordinary commit with it. With a 5 s fold, the ordinary row committed 0.3 s after the first would wait ~5 s; the
    urgent one committed after it goes within about a second, and so does the ordinary one, in the same wake-up."""
    from tests.integration.test_priority_claims import _priority, _rows

    wf = await env.workflow("welcome")
    urgent = await _priority(env, "fire-trickle", 1)
    async with env.worker(**NO_TICKS, wakeup_debounce_ms=5_000) as manager:
        await eventually(lambda: settled(manager), timeout=30)
        w = listener(manager)
        before = w.wakeups_sent + w.linger_signals_sent
        first = await _rows(env, wf, 1)
        await eventually(lambda: env.all_in(first, "SENT"), timeout=10, interval=0.05)
        folded = await _rows(env, wf, 1)
        await asyncio.sleep(0.3)
        started = time.monotonic()
        alarm = await _rows(env, wf, 1, priority=urgent)
        await eventually(lambda: env.all_in(alarm + folded, "SENT"), timeout=4, interval=0.05)
        took = time.monotonic() - started
        await eventually(lambda: settled(manager), timeout=30)
        sent = w.wakeups_sent + w.linger_signals_sent - before
    print(f"\nurgent commit behind a 5 s fold: it and the folded row sent {took:.2f} s after it; {sent} wake-ups")
    assert took < 2.0, f"{took:.2f} s"
    assert sent <= 3, f"{sent} wake-ups: the urgent one carries the folded commit (first, urgent, at most a trailer)"
