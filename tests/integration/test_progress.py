"""Progress (I7 of docs/design.md "The invariants"): no dead claim stalls the deployment, and no attempt ends with
its row still PROCESSING. Each case was a stall or a wait of a whole lease before its fix (issue 16, findings 1, 2
and 4); every test runs on the real stack with a lease long enough that recovery cannot explain the result.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from temporalio.client import WorkflowExecutionStatus

from tests.support import Env, eventually, processor_for
from xnovu.core.models import NotificationInput, Outcome, PollKind, child_id
from xnovu.db.queries import q
from xnovu.db.repository import ClaimLimits, NotificationRow, Repository
from xnovu.service.processor import NotificationProcessor
from xnovu.temporal.connection import connect_temporal
from xnovu.worker import composition


async def _leave_dead_claims(env: Env, ids: list[int]) -> None:
    """What a crashed original worker leaves behind: PROCESSING rows at attempt 0, without a lease, untouched for an
    hour (the updated_at trigger is bypassed so the age sticks)."""
    async with env.repo.pool.acquire() as conn, conn.transaction():
        await conn.execute("SET LOCAL session_replication_role = replica")
        await conn.execute(
            "UPDATE notify.ent_notification SET notification_status = 'PROCESSING', attempts = 0, "
            "next_attempt_at = NULL, updated_at = now() - interval '1 hour' WHERE id = ANY($1::bigint[])",
            ids,
        )


def _once_each(env: Env) -> Counter[tuple[str, str]]:
    pairs = Counter((e["subscriberId"], e["transactionId"]) for e in env.deliveries())
    assert env.stats()["duplicate_deliveries"] == 0 and max(pairs.values(), default=1) == 1
    return pairs


async def test_a_dead_claim_bigger_than_the_token_window_does_not_stall_the_deployment(env: Env) -> None:
    """The issue's database: one dead 1 000-recipient claim, five PENDING rows, 60 tokens/s (a window of 600 tokens),
    a 10 s lease. Before: the dead row counted as in flight (and a second time as the recovered candidate), so no
    poll could claim anything, ever."""
    wf = await env.workflow("welcome")
    [dead] = await env.insert(wf, recipients=1_000)
    await _leave_dead_claims(env, [dead])
    pending = await env.insert(wf, 5)
    async with env.worker(novu_rate_limit_rps=60, processing_lease_ms=10_000):
        await eventually(lambda: env.all_in(pending, "SENT"), timeout=60, interval=0.5)
        await eventually(lambda: env.all_in([dead], "SENT"), timeout=90, interval=0.5)
    row = await env.row(dead)
    assert row["attempts"] == 1, "recovered once, as the next attempt"
    assert len(_once_each(env)) == 1_005


async def test_hundreds_of_small_dead_claims_do_not_stall_the_deployment(env: Env) -> None:
    """150 dead single-recipient claims against a bound of 100 rows in flight (5 batches of 20)."""
    wf = await env.workflow("welcome")
    dead = await env.insert(wf, 150)
    await _leave_dead_claims(env, dead)
    pending = await env.insert(wf, 5)
    async with env.worker(poll_batch_size=20, processing_lease_ms=10_000):
        await eventually(lambda: env.all_in(pending, "SENT"), timeout=45, interval=0.5)
        await eventually(lambda: env.all_in(dead, "SENT"), timeout=90, interval=0.5)
    assert len(_once_each(env)) == 155


async def test_a_claim_counts_only_live_attempts_as_in_flight(env: Env) -> None:
    """The claim itself, without Temporal: a row whose lease ran out uses no budget (a scheduled row claimed ahead
    does: it sends the moment its time comes), and the failed poll recovers a dead row whose cost is bigger than the
    whole window: counted once, as its own candidate, and at most half the window, in the retry lane's share beside
    the live attempts (docs/priority.md "Claims"); before issue 17 it waited until nothing live was in flight."""
    wf = await env.workflow("welcome")
    [dead] = await env.insert(wf, recipients=1_000)
    await env.execute(
        "UPDATE notify.ent_notification SET notification_status = 'PROCESSING', attempts = 1, "
        "next_attempt_at = now() - interval '1 minute' WHERE id = $1",
        dead,
    )
    [waiting] = await env.insert(wf, scheduled_for=datetime.now(UTC) + timedelta(minutes=1))
    await env.execute(
        "UPDATE notify.ent_notification SET notification_status = 'PROCESSING', attempts = 1, "
        "next_attempt_at = scheduled_for + interval '10 minutes' WHERE id = $1",
        waiting,
    )
    [due] = await env.insert(wf)
    limits = ClaimLimits(max_rows=500, max_tokens=600)
    new = await env.repo.claim(PollKind.NEW, batch_size=10, lease_ms=10_000, limits=limits)
    assert [c.notification_id for c in new.rows] == [due]
    flight = await env.repo.pool.fetchrow(q("in_flight"), 10_000, None)
    assert flight is not None and (flight["rows"], flight["tokens"]) == (2, 2), "the waiting and the due row"
    failed = await env.repo.claim(PollKind.FAILED, batch_size=10, lease_ms=10_000, limits=limits, recoverable=[dead])
    assert [c.notification_id for c in failed.rows] == [dead], "recovered beside the live attempts"
    flight = await env.repo.pool.fetchrow(q("claim_flight"), 10_000, None, limits.row_cap, None, None, 0)
    assert flight is not None
    assert sorted((g["rows"], g["tokens"]) for g in flight["groups"]) == [(1, 300), (2, 2)], (
        "counted once, at half the window"
    )


async def test_an_attempt_whose_novu_workflow_is_held_mid_send_gives_its_row_back(env: Env) -> None:
    """The workflow goes DRAFT (then deactivated, then DISCARD) between two requests of an attempt: the fence stops
    the attempt, and the row is given back PENDING (held) or dead-lettered right away, not left PROCESSING for a
    lease. Republished, the held row finishes with every recipient once."""
    env.configure_emulator(latency_ms=700, idempotency=False)
    for change, key in (
        ("publish_status = 'DRAFT'", "draft"),
        ("deactivated = true", "deactivated"),
        ("publish_status = 'DISCARD'", "discard"),
    ):
        wf = await env.workflow(f"held-{key}")
        [nid] = await env.insert(wf, recipients=300)
        async with processor_for(env, processing_lease_ms=600_000) as processor:
            processor.request_concurrency = 1
            before = env.stats()["requests"]
            task = asyncio.create_task(processor.process(nid))

            async def started(before: int = before) -> bool:
                return bool(env.stats()["requests"] > before)

            await eventually(started, timeout=10, interval=0.02)
            await env.execute(f"UPDATE notify.ent_notification_workflow SET {change} WHERE id = $1", wf)
            result = await task
        row = await env.row(nid)
        if key != "discard":
            assert result.outcome is Outcome.REJECTED, result
            assert row["status"] == "PENDING" and "workflow" in row["error_details"]["error"], row
            assert row["attempts"] == 1, "the attempt ran (100 recipients acknowledged): it counts"
            await env.execute(
                "UPDATE notify.ent_notification_workflow SET publish_status = 'PUBLISH', deactivated = false "
                "WHERE id = $1",
                wf,
            )
            async with processor_for(env) as processor:
                assert (await processor.process(nid)).outcome is Outcome.SENT
        else:
            assert result.outcome is Outcome.DEAD_LETTERED, result
            assert row["status"] == "FAILED" and row["dead_lettered_at"] is not None, row
    _once_each(env)


async def test_a_timer_that_ends_early_waits_the_rest(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    """Temporal's and the worker's clocks 8 s ahead of Postgres': the child's durable timer fires 8 s before the
    row's send time by the database's clock. The attempt waits the rest and sends on time, instead of ending with
    the row PROCESSING for a whole lease."""
    built = composition.build_processor

    def ahead(*args: Any, **kwargs: Any) -> NotificationProcessor:
        processor = built(*args, **kwargs)
        processor.clock = lambda: datetime.now(UTC) + timedelta(seconds=8)
        return processor

    monkeypatch.setattr(composition, "build_processor", ahead)
    wf = await env.workflow("welcome")
    at = datetime.now(UTC) + timedelta(seconds=10)
    [nid] = await env.insert(wf, scheduled_for=at)
    limits = ClaimLimits(max_rows=100, max_tokens=1_000)
    batch = await env.repo.claim(
        PollKind.SCHEDULED, batch_size=10, lease_ms=600_000, limits=limits, lookahead_ms=60_000
    )
    assert [c.notification_id for c in batch.rows] == [nid]
    client = await connect_temporal(env.settings)
    async with env.worker(processing_lease_ms=600_000, scheduled_poll_interval_ms=3_600_000) as manager:
        assert manager.client is not None
        handle = await client.start_workflow(
            "NotificationTriggerWorkflow",
            NotificationInput(nid, 1, at - timedelta(seconds=8)),  # the timer that ends early
            id=child_id(nid, 1),
            task_queue=env.settings.temporal_task_queue,
        )
        await eventually(lambda: env.all_in([nid], "SENT"), timeout=30, interval=0.2)
        sent_at = datetime.now(UTC)
        result = await handle.result()
        assert result["outcome"] == "sent", result
    assert sent_at >= at - timedelta(seconds=2.5), f"sent {(at - sent_at).total_seconds():.1f} s early"
    assert env.stats()["deliveries"] == 1


async def test_a_poll_whose_child_id_is_still_closing_starts_the_child_once_it_closed(env: Env) -> None:
    """A row given back and claimed again at the same attempt number while the attempt's old workflow is still
    closing: the poll's start fails with WorkflowAlreadyStarted. It retries the start until the old workflow closed,
    instead of counting the row as handled and leaving it PROCESSING for a whole lease."""
    wf = await env.workflow("welcome")
    [nid] = await env.insert(wf, publish_status="DRAFT")
    client = await connect_temporal(env.settings)
    async with env.worker(processing_lease_ms=600_000):
        # Stands for the old workflow of attempt 1, still open: a workflow under that id that nobody runs.
        old = await client.start_workflow(
            "OldAttempt", id=child_id(nid, 1), task_queue=f"{env.settings.temporal_task_queue}-x"
        )
        await env.execute("UPDATE notify.ent_notification SET publish_status = 'PUBLISH' WHERE id = $1", nid)

        async def claimed() -> bool:
            return (await env.row(nid))["status"] == "PROCESSING"

        await eventually(claimed, timeout=15, interval=0.1)
        await asyncio.sleep(1.5)
        await old.terminate("the old attempt closes")
        await eventually(lambda: env.all_in([nid], "SENT"), timeout=25, interval=0.2)
    assert (await env.row(nid))["attempts"] == 1
    assert env.stats()["deliveries"] == 1


class _ClaimedBetweenLoadAndAcquire(Repository):
    """The race of the review: a poll claims the row's next attempt right after the caller read it."""

    def __init__(self, repo: Repository) -> None:
        super().__init__(repo.pool)

    async def load(self, notification_id: int) -> NotificationRow | None:
        row = await super().load(notification_id)
        limits = ClaimLimits(max_rows=100, max_tokens=1_000)
        await super().claim(PollKind.NEW, batch_size=10, lease_ms=600_000, limits=limits)
        return row


async def test_taking_the_next_attempt_never_joins_an_attempt_a_poll_claimed(env: Env) -> None:
    """`process(id)` (the library's "take the next attempt") read the row PENDING at attempt 0; a poll claimed
    attempt 1 before it acquired. It must not send as attempt 1: only workflow notification-{id}-a1 may."""
    wf = await env.workflow("welcome")
    [nid] = await env.insert(wf, recipients=3)
    async with processor_for(env) as processor:
        processor.repo = _ClaimedBetweenLoadAndAcquire(env.repo)
        result = await processor.process(nid)
    assert result.outcome is Outcome.SKIPPED, result
    assert env.stats()["requests"] == 0
    row = await env.row(nid)
    assert row["status"] == "PROCESSING" and row["attempts"] == 1, "the poll's claim is untouched"


async def test_the_batch_trigger_runs_each_attempt_as_its_own_deterministic_workflow(env: Env) -> None:
    """TriggerMultipleNotificationsWorkflow starts (or joins) notification-{id}-a{k}: the one sender of attempt k."""
    from xnovu.api import NotificationClient

    wf = await env.workflow("welcome")
    ids = await env.insert(wf, 3, recipients=2)
    client = await connect_temporal(env.settings)
    async with env.worker(poll_interval_ms=3_600_000, wakeup_enabled=False):
        async with NotificationClient(env.settings, client=client, repo=env.repo) as nc:
            results = await nc.async_trigger_multiple_notifications([*ids, 999_999], concurrency=2)
    assert [r.outcome for r in results] == [Outcome.SENT] * 3 + [Outcome.REJECTED]
    for nid in ids:
        desc = await client.get_workflow_handle(child_id(nid, 1)).describe()
        assert desc.status is WorkflowExecutionStatus.COMPLETED
    assert len(_once_each(env)) == 6


async def test_a_claim_run_again_under_the_same_key_returns_its_rows_instead_of_orphaning_them(env: Env) -> None:
    """A poll whose workflow task is lost after its claim (a worker crash before the task completed, a claim whose
    answer was cut off) runs the claim again: the same key (the poll run and its local activity) returns the rows the
    first run claimed, instead of claiming new ones and leaving the first PROCESSING, unstarted, for a whole lease
    while they count against the window."""
    wf = await env.workflow("welcome")
    ids = await env.insert(wf, 3)
    limits = ClaimLimits(max_rows=100, max_tokens=1_000)
    first = await env.repo.claim(PollKind.NEW, batch_size=2, lease_ms=600_000, limits=limits, claim_key="run-a/1")
    again = await env.repo.claim(PollKind.NEW, batch_size=2, lease_ms=600_000, limits=limits, claim_key="run-a/1")
    assert [c.notification_id for c in first.rows] == ids[:2]
    assert again.rows == first.rows, "the same rows, at the same attempts"
    other = await env.repo.claim(PollKind.NEW, batch_size=2, lease_ms=600_000, limits=limits, claim_key="run-b/1")
    assert [c.notification_id for c in other.rows] == ids[2:]


async def test_the_claim_activity_keys_its_claim_by_poll_run_and_activity(env: Env) -> None:
    """The key is what a re-run of the same local activity has in common with the first run (Temporal's info)."""
    from temporalio.testing import ActivityEnvironment

    from xnovu.worker.composition import build_activities, novu_client

    wf = await env.workflow("welcome")
    ids = await env.insert(wf, 3)
    client = novu_client(env.settings)
    try:
        activities = build_activities(env.settings.model_copy(update={"poll_batch_size": 2}), env.repo, client)
        activities._schedule_paused = _never_paused  # type: ignore[method-assign]
        aenv = ActivityEnvironment()
        aenv.info = dataclasses.replace(aenv.info, workflow_run_id="run-x", activity_id="1")
        first = await aenv.run(activities.claim_notifications, PollKind.NEW)
        again = await aenv.run(activities.claim_notifications, PollKind.NEW)
    finally:
        await client.aclose()
    assert [c.notification_id for c in first.rows] == ids[:2] and again.rows == first.rows


async def _never_paused(kind: PollKind) -> bool:
    return False


async def test_a_claim_frozen_inside_its_transaction_does_not_stall_every_other_claim(env: Env) -> None:
    """A worker stopped (SIGSTOP, a stalled event loop) in the middle of its claim transaction holds the claim lock
    that every claim of every worker takes: before, every poll waited for it for as long as the worker stayed
    frozen. Postgres now ends such a transaction after CLAIM_IDLE_TIMEOUT, and the others go on."""
    import asyncpg

    from xnovu.db.queries import q
    from xnovu.db.repository import database_url

    wf = await env.workflow("welcome")
    [nid] = await env.insert(wf)
    frozen = await asyncpg.connect(database_url(env.settings))
    try:
        tx = frozen.transaction()
        await tx.start()
        await frozen.execute(q("claim_lock"))  # ... and then the worker stops answering
        limits = ClaimLimits(max_rows=100, max_tokens=1_000)
        batch = await asyncio.wait_for(
            env.repo.claim(PollKind.NEW, batch_size=10, lease_ms=600_000, limits=limits), timeout=15
        )
        assert [c.notification_id for c in batch.rows] == [nid]
    finally:
        frozen.terminate()


async def test_the_batch_trigger_joins_an_attempt_that_is_already_running(env: Env) -> None:
    """A row whose attempt already runs (here: waiting on its send time) is joined, not started again: the batch's
    answer for it is that workflow's result, and the recipient gets one delivery."""
    from xnovu.api import NotificationClient

    wf = await env.workflow("welcome")
    at = datetime.now(UTC) + timedelta(seconds=3)
    [nid] = await env.insert(wf, scheduled_for=at)
    limits = ClaimLimits(max_rows=100, max_tokens=1_000)
    await env.repo.claim(PollKind.SCHEDULED, batch_size=10, lease_ms=600_000, limits=limits, lookahead_ms=60_000)
    client = await connect_temporal(env.settings)
    async with env.worker(poll_interval_ms=3_600_000, wakeup_enabled=False):
        await client.start_workflow(
            "NotificationTriggerWorkflow",
            NotificationInput(nid, 1, at),
            id=child_id(nid, 1),
            task_queue=env.settings.temporal_task_queue,
        )
        async with NotificationClient(env.settings, client=client, repo=env.repo) as nc:
            [result] = await nc.async_trigger_multiple_notifications([nid])
    assert result.outcome is Outcome.SENT and result.attempt == 1, result
    assert env.stats()["deliveries"] == 1


async def test_a_worker_started_before_migrate_says_which_migrations_are_missing(env: Env) -> None:
    """A worker of this version on a database that lacks its latest migrations (an upgrade that replaced the workers
    before `xnovu db migrate`) failed every claim on a missing column; it now refuses to start with one line that
    names the migrations and the fix."""
    from xnovu.errors import DatabaseError

    await env.execute("DELETE FROM notify.xnovu_schema_migrations WHERE version = '0010_claim_key'")
    try:
        with pytest.raises(DatabaseError, match=r"0010_claim_key.*xnovu db migrate"):
            async with env.worker():
                pass
    finally:
        await env.execute("INSERT INTO notify.xnovu_schema_migrations (version) VALUES ('0010_claim_key')")
