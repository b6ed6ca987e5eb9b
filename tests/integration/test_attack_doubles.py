"""Attack review of issue 16's change: two senders of one attempt. FAILS on the change as it stands: the evidence of a
finding, not a regression test of a fix.

Run: pytest tests/integration/test_attack_doubles.py --basetemp=/tmp/pt-attack
"""

from __future__ import annotations

import asyncio

from tests.support import Env, eventually, processor_for
from xnovu.core.models import Outcome
from xnovu.temporal.connection import connect_temporal


async def test_the_batch_trigger_confirms_an_attempt_the_library_is_sending(env: Env) -> None:
    """Finding: `NotificationProcessor.process(id)` (the library entry point, "a user's own code" in processor.py's
    docstring) takes the next attempt from a PENDING row without any workflow: the row is PROCESSING at attempt 1 and
    no notification-{id}-a1 exists. A batch trigger meanwhile plans "join attempt 1", starts notification-{id}-a1
    (nothing runs under that id), and that workflow, as the attempt's owner, confirms the claim: two senders of
    attempt 1 from the same ledger snapshot; with Novu idempotency off, recipients are delivered twice (I2, I4)."""
    from xnovu.api import NotificationClient

    env.configure_emulator(latency_ms=300, idempotency=False)
    wf = await env.workflow("welcome")
    [nid] = await env.insert(wf, recipients=30)
    client = await connect_temporal(env.settings)
    async with env.worker(poll_interval_ms=3_600_000, failed_poll_interval_ms=3_600_000, wakeup_enabled=False):
        async with processor_for(env) as processor:
            processor.request_concurrency = 1
            direct = asyncio.create_task(processor.process(nid))

            async def sending() -> bool:
                return bool(env.stats()["requests"] > 0)

            await eventually(sending, timeout=10, interval=0.02)
            async with NotificationClient(env.settings, client=client, repo=env.repo) as nc:
                [batch] = await nc.async_trigger_multiple_notifications([nid])
            mine = await direct
    stats = env.stats()
    print(
        f"\nlibrary: {mine.outcome} attempt {mine.attempt}; batch: {batch.outcome} attempt {batch.attempt}; "
        f"deliveries {stats['deliveries']}, duplicates {stats['duplicate_deliveries']}"
    )
    assert mine.outcome is Outcome.SENT or batch.outcome is Outcome.SENT
    assert stats["duplicate_deliveries"] == 0, "two senders ran attempt 1"


async def test_the_batch_workflow_history_grows_with_the_batch(env: Env) -> None:
    """Measurement (unbounded growth): TriggerMultipleNotificationsWorkflow now starts and awaits one child per id in
    one execution, with no continue-as-new and no cap on the ids: its history grows by a few events per id, so a
    batch of ~15 000 ids passes Temporal's default limit of 51 200 events (the workflow is terminated) and the plan
    marker carries every TriggerPlan in one payload (2 MB limit)."""
    from xnovu.api import NotificationClient

    wf = await env.workflow("welcome")
    client = await connect_temporal(env.settings)
    counts = {}
    async with env.worker(poll_interval_ms=3_600_000, failed_poll_interval_ms=3_600_000, wakeup_enabled=False):
        async with NotificationClient(env.settings, client=client, repo=env.repo) as nc:
            for n in (5, 50):
                ids = await env.insert(wf, n)
                await nc.async_trigger_multiple_notifications(ids, concurrency=10)
                batch = [
                    w async for w in client.list_workflows("WorkflowType = 'TriggerMultipleNotificationsWorkflow'")
                ]
                newest = max(batch, key=lambda w: w.start_time)
                history = await client.get_workflow_handle(newest.id, run_id=newest.run_id).fetch_history()
                counts[n] = len(history.events)
    per_id = (counts[50] - counts[5]) / 45
    print(f"\nbatch history: {counts} events; {per_id:.1f} per id; 51 200 events at ~{51_200 / per_id:.0f} ids")
    assert per_id < 0.5, f"{per_id:.1f} history events per id, no continue-as-new, no cap on the batch"
