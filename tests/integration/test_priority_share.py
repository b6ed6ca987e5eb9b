"""Fair share across urgency levels, the due backlog's urgent alert and the fairness probe's bound (issue 17,
docs/priority.md), on the real stack. Each test failed on the code before its fix (findings of the attack on issue
17). Fixtures of tests/integration/test_priority_claims.py."""

from __future__ import annotations

import asyncio
import os
import signal
import sys

import pytest
from temporalio.client import Client

from tests.integration.test_priority_claims import LIMITS, _claim, _priority, _rows
from tests.support import Env, eventually
from xnovu.core.backlog import summarize
from xnovu.core.models import PollKind

A = "aaaaaaaa-0000-4000-8000-000000000001"


async def test_a_less_urgent_row_of_an_enterprise_does_not_overtake_its_more_urgent_ones(env: Env) -> None:
    """A alone fills the normal window (20 rows). Its further normal rows wait, and so do its rows below normal:
    they are the same enterprise in the same class, whose share is the whole window, not a group of their own."""
    wf = await env.workflow("welcome")
    low = await _priority(env, "digest", -1)
    await _rows(env, wf, 20, enterprise=A)
    assert len(await _claim(env, batch=20)) == 20
    await _rows(env, wf, 5, enterprise=A)
    lows = await _rows(env, wf, 5, enterprise=A, priority=low)
    got = await _claim(env, batch=10)
    in_flight = await env.repo.pool.fetchval(
        "SELECT count(*) FROM notify.ent_notification WHERE notification_status = 'PROCESSING'"
    )
    assert not set(got) & set(lows), "A's below-normal rows overtook its normal ones"
    assert in_flight == LIMITS.max_rows, "a group alone never goes beyond the window"


@pytest.mark.parametrize("held", ["workflow-draft", "row-deactivated"])
async def test_an_urgent_retry_no_claim_may_take_does_not_page_as_an_urgent_row_waiting(env: Env, held: str) -> None:
    """XnovuUrgentNotificationsWaiting watches the sample's oldest due urgent row: a retry of a DRAFT workflow, or
    a deactivated one, is not claimable, so it is not waiting either; a claimable urgent retry still is."""
    wf = await env.workflow("paused")
    urgent = await _priority(env, "fire-emergency", 2)
    [row] = await _rows(env, wf, 1, priority=urgent, status="FAILED", attempts=1, age_s=600)
    if held == "workflow-draft":
        await env.execute("UPDATE notify.ent_notification_workflow SET publish_status = 'DRAFT' WHERE id = $1", wf)
    else:
        await env.execute("UPDATE notify.ent_notification SET deactivated = true WHERE id = $1", row)
    await env.repo.hold_sweep()
    assert await _claim(env, PollKind.FAILED) == []
    backlog = summarize(await env.repo.due_backlog(10_000))
    assert (backlog.highest_urgency, backlog.urgent_oldest_s, backlog.by_urgency) == (None, 0, {})

    live = await env.workflow("welcome")
    [retry] = await _rows(env, live, 1, priority=await _priority(env, "reminder", 1), status="FAILED", attempts=1,
                          age_s=30)
    backlog = summarize(await env.repo.due_backlog(10_000))
    assert backlog.highest_urgency == 1 and 29 <= backlog.urgent_oldest_s < 60
    assert await _claim(env, PollKind.FAILED) == [retry]


async def test_a_killed_fairness_probe_leaves_no_workflow_running_forever(env: Env) -> None:
    """`xnovu doctor --fairness-probe` killed mid-probe (a cron job's `timeout`): its probe workflows are on a task
    queue nobody polls; each has an execution timeout, so none stays open forever."""
    address = env.stack.temporal.address
    client = await Client.connect(address, namespace="default")
    running = "WorkflowType = 'XnovuFairnessProbe' AND ExecutionStatus = 'Running'"
    before = {w.id async for w in client.list_workflows(running)}
    code = (
        "import asyncio\nfrom temporalio.client import Client\nfrom xnovu.temporal.fairness import probe_fairness\n"
        f"async def main():\n    await probe_fairness(await Client.connect({address!r}, namespace='default'))\n"
        "asyncio.run(main())\n"
    )
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", code)
    try:
        await eventually(lambda: _count(client, running, len(before) + 5), timeout=30, interval=0.2)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        await proc.wait()
    left = [w.id async for w in client.list_workflows(running) if w.id not in before]
    try:
        timeouts = [
            (await client.get_workflow_handle(wid).describe()).raw_description.execution_config
            .workflow_execution_timeout.ToSeconds()
            for wid in left[:3]
        ]
        assert left and all(0 < t <= 600 for t in timeouts), f"execution timeouts (s, 0 = none): {timeouts}"
    finally:
        for wid in left:
            await client.get_workflow_handle(wid).terminate(reason="test cleanup")


async def _count(client: Client, query: str, at_least: int) -> bool:
    return (await client.count_workflows(query)).count >= at_least
