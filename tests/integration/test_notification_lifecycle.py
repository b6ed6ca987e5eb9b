"""The durable lifecycle through Temporal: schedules, polls, children, retries, dead-letter, scheduled sends.

Real Postgres, real Temporal dev server, real HTTP emulator, real time with short intervals.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from temporalio.client import WorkflowExecutionStatus

from tests.support import Env, eventually
from xnovu.api import NotificationClient
from xnovu.core.models import Outcome, PollKind
from xnovu.temporal import searchattrs
from xnovu.temporal.bootstrap import bootstrap
from xnovu.temporal.connection import connect_temporal
from xnovu.temporal.schedules import describe_schedules, schedule_id, set_paused, trigger_now


def _received(event: dict[str, object]) -> datetime:
    return datetime.fromisoformat(str(event["receivedAt"]).replace("Z", "+00:00"))


async def test_manual_trigger_runs_the_deterministic_workflow_with_search_attributes(env: Env) -> None:
    wf = await env.workflow("welcome", enterprise_id="7d7c4a4e-0000-4000-8000-000000000001")
    [nid] = await env.insert(wf, recipients=2)
    await env.execute(
        "UPDATE notify.ent_notification SET enterprise_id = '7d7c4a4e-0000-4000-8000-000000000001' WHERE id = $1", nid
    )
    async with env.worker(poll_interval_ms=3_600_000) as manager, NotificationClient(env.settings) as nc:
        result = await nc.async_trigger_notification_by_id(nid)
        assert result.outcome is Outcome.SENT and result.success_count == 2
        assert manager.client is not None
        desc = await manager.client.get_workflow_handle(f"notification-{nid}-a1").describe()
        assert desc.status is WorkflowExecutionStatus.COMPLETED
        attrs = desc.typed_search_attributes
        assert attrs.get(searchattrs.NOTIFICATION_ID) == nid
        assert attrs.get(searchattrs.WORKFLOW_KEY) == "welcome"
        assert attrs.get(searchattrs.ENTERPRISE_ID) == "7d7c4a4e-0000-4000-8000-000000000001"
        assert (await desc.memo_value("notification")) == "n0"
        again = await nc.async_trigger_notification_by_id(nid)
        assert again.outcome is Outcome.SKIPPED and "already sent" in (again.reason or "")
    assert env.stats()["deliveries"] == 2


async def test_backlog_larger_than_a_batch_drains_in_one_poll_without_waiting_for_ticks(env: Env) -> None:
    wf = await env.workflow("welcome")
    ids = await env.insert(wf, 45)
    async with env.worker(poll_batch_size=10, poll_interval_ms=3_600_000) as manager:
        assert manager.client is not None
        await trigger_now(manager.client, PollKind.NEW)
        await eventually(lambda: env.all_in(ids, "SENT"), timeout=30)
    assert env.stats()["deliveries"] == 45


async def test_scheduled_notification_is_sent_within_a_second_of_its_time(env: Env) -> None:
    wf = await env.workflow("welcome")
    due = datetime.now(UTC) + timedelta(seconds=5)
    [nid] = await env.insert(wf, scheduled_for=due)
    async with env.worker():
        await asyncio.sleep(2)
        assert env.deliveries() == [], "not before its time (I1)"
        await eventually(lambda: env.all_in([nid], "SENT"), timeout=20)
    [event] = env.deliveries()
    assert abs((_received(event) - due).total_seconds()) <= 1.0


async def test_retracting_a_waiting_scheduled_notification_means_no_send(env: Env) -> None:
    wf = await env.workflow("welcome")
    due = datetime.now(UTC) + timedelta(seconds=5)
    [retracted, unpublished, kept] = await env.insert(wf, 3, scheduled_for=due)
    async with env.worker():
        # The scheduled poll claims them ahead of time; their children wait on durable timers.
        await eventually(lambda: env.all_in([retracted, unpublished, kept], "PROCESSING"), timeout=15)
        assert await env.repo.retract(retracted, "customer cancelled")
        await env.execute("UPDATE notify.ent_notification SET publish_status = 'DRAFT' WHERE id = $1", unpublished)
        await eventually(lambda: env.all_in([kept], "SENT"), timeout=20)
        await asyncio.sleep(1.5)
    assert len(env.deliveries()) == 1
    row = await env.row(retracted)
    assert row["status"] == "RETRACTED" and row["retraction_reason"] == "customer cancelled"
    row = await env.row(unpublished)
    assert row["status"] == "PENDING" and "DRAFT" in row["error_details"]["error"]


async def test_transient_failure_is_retried_by_the_failed_poll_with_backoff(env: Env) -> None:
    wf = await env.workflow("welcome")
    env.configure_emulator(error_rate=1.0)
    [nid] = await env.insert(wf, recipients=2)
    async with env.worker(retry_backoff_base_ms=1_500):
        await eventually(lambda: env.all_in([nid], "FAILED"), timeout=20)
        row = await env.row(nid)
        assert row["next_attempt_at"] is not None and row["dead_lettered_at"] is None
        assert row["error_details"]["next_attempt_at"] is not None
        env.configure_emulator(error_rate=0.0)
        await eventually(lambda: env.all_in([nid], "SENT"), timeout=20)
    row = await env.row(nid)
    assert row["attempts"] == 2
    assert env.stats()["deliveries"] == 2 and env.stats()["duplicate_deliveries"] == 0


async def test_dead_letter_after_max_attempts_then_requeue_sends_only_the_rest(env: Env) -> None:
    wf = await env.workflow("welcome")
    [nid] = await env.insert(wf, recipients=4)
    recipients = [str(r) for r in (await env.row(nid))["recipients"]]
    # Two recipients were acknowledged by Novu in an earlier life of this row: the ledger remembers them.
    await env.execute(
        "INSERT INTO notify.ent_notification_delivery (notification_id, recipient_id, status) "
        "SELECT $1, r, 'SENT' FROM unnest($2::uuid[]) AS r",
        nid,
        recipients[:2],
    )
    env.configure_emulator(error_rate=1.0)
    async with env.worker(max_attempts=2, retry_backoff_base_ms=200):
        await eventually(lambda: env.all_in([nid], "FAILED"), timeout=20)
        await eventually(lambda: _dead_lettered(env, nid), timeout=20)
        row = await env.row(nid)
        assert row["attempts"] == 2 and row["error_details"]["dead_letter"] is True
        assert "gave up after 2 attempts" in row["error_details"]["error"]
        await asyncio.sleep(2.5)
        assert (await env.row(nid))["attempts"] == 2, "dead-lettered rows are never retried automatically"
        env.configure_emulator(error_rate=0.0)
        assert await env.repo.dlq_requeue([nid]) == [nid]
        await eventually(lambda: env.all_in([nid], "SENT"), timeout=20)
    sent_to = [e["subscriberId"] for e in env.deliveries()]
    assert sorted(sent_to) == sorted(recipients[2:]), "acknowledged recipients are not sent again after requeue"
    assert (await env.row(nid))["error_details"]["successCount"] == 4


async def _dead_lettered(env: Env, nid: int) -> bool:
    return (await env.row(nid))["dead_lettered_at"] is not None


async def test_row_left_processing_by_a_dead_worker_is_recovered_after_its_lease(env: Env) -> None:
    wf = await env.workflow("welcome")
    [nid] = await env.insert(wf)
    # What a worker that died right after claiming leaves behind: PROCESSING, attempt 1, lease expired a while
    # ago, and no workflow for attempt 1.
    await env.execute(
        "UPDATE notify.ent_notification SET notification_status = 'PROCESSING', attempts = 1, "
        "next_attempt_at = now() - interval '1 minute' WHERE id = $1",
        nid,
    )
    async with env.worker():
        await eventually(lambda: env.all_in([nid], "SENT"), timeout=20)
    assert (await env.row(nid))["attempts"] == 2
    assert env.stats()["deliveries"] == 1


async def test_pause_holds_every_poll_and_resume_catches_up(env: Env) -> None:
    wf = await env.workflow("welcome")
    async with env.worker() as manager:
        assert manager.client is not None
        client = manager.client
        await set_paused(client, list(PollKind), True, "maintenance")

        async def no_poll_running() -> bool:
            """A run started before the pause may still claim (pausing stops new runs, not running ones): wait
            until no schedule has a running action, twice in a row a second apart (a buffered one may follow)."""
            for _ in range(2):
                for kind in PollKind:
                    desc = await client.get_schedule_handle(schedule_id(kind)).describe()
                    if desc.info.running_actions:
                        return False
                await asyncio.sleep(1)
            return True

        await eventually(no_poll_running, timeout=30)
        ids = await env.insert(wf, 5)
        await asyncio.sleep(3)
        rows = await env.statuses(ids)
        ours = {str(r) for i in ids for r in (await env.row(i))["recipients"]}
        sent = [e for e in env.deliveries() if e["subscriberId"] in ours]
        assert set(rows.values()) == {"PENDING"} and sent == [], (rows, sent)
        await set_paused(manager.client, list(PollKind), False)
        await eventually(lambda: env.all_in(ids, "SENT"), timeout=20)


async def test_bootstrap_twice_changes_nothing_and_keeps_a_paused_schedule_paused(env: Env) -> None:
    client = await connect_temporal(env.settings)
    first = await bootstrap(client, env.settings)
    assert set(first.schedules.values()) == {"created"}
    second = await bootstrap(client, env.settings)
    assert set(second.schedules.values()) == {"unchanged"} and second.search_attributes == []
    await set_paused(client, [PollKind.NEW], True, "paused for the migration")
    changed = env.settings.model_copy(update={"poll_interval_ms": 7_000})
    third = await bootstrap(client, changed)
    assert third.schedules[schedule_id(PollKind.NEW)] == "updated"
    info = {s.id: s for s in await describe_schedules(client)}[schedule_id(PollKind.NEW)]
    assert info.paused and info.note == "paused for the migration" and info.interval_s == 7


async def test_two_workers_and_manual_triggers_racing_the_polls_process_each_notification_once(env: Env) -> None:
    wf = await env.workflow("welcome")
    async with env.worker(), env.worker(), NotificationClient(env.settings) as nc:
        ids = await env.insert(wf, 40, recipients=2)
        manual = [nc.start_notification(i) for i in ids[::2]]
        await asyncio.gather(*manual)
        await eventually(lambda: env.all_in(ids, "SENT"), timeout=40)
    stats = env.stats()
    assert stats["deliveries"] == 80 and stats["duplicate_deliveries"] == 0
    attempts = await env.repo.pool.fetch(
        "SELECT attempts FROM notify.ent_notification WHERE id = ANY($1::bigint[])", ids
    )
    assert {r["attempts"] for r in attempts} == {1}, "a manual trigger joins the poll's attempt instead of adding one"


async def test_flaky_novu_with_errors_and_timeouts_delivers_everything_exactly_once(env: Env) -> None:
    wf = await env.workflow("welcome")
    env.configure_emulator(error_rate=0.2, timeout_rate=0.1, timeout_delay_s=2.0, seed=5)
    ids = await env.insert(wf, 30, recipients=2)
    async with env.worker(novu_timeout_ms=800, max_attempts=20, retry_backoff_base_ms=300, retry_backoff_max_ms=600):
        await eventually(lambda: env.all_in(ids, "SENT"), timeout=90)
    stats = env.stats()
    assert stats["duplicate_deliveries"] == 0
    assert len({(e["subscriberId"], e["transactionId"]) for e in env.deliveries()}) == 60
    assert stats["status_codes"].get("500", 0) > 0


async def test_trigger_multiple_processes_each_id_with_its_own_outcome(env: Env) -> None:
    wf = await env.workflow("welcome")
    good = await env.insert(wf, 5, recipients=2)
    [draft] = await env.insert(wf, publish_status="DRAFT")
    # No poll races the batch here (no wake-up at start, no tick): each row's outcome is the batch's own.
    async with env.worker(poll_interval_ms=3_600_000, wakeup_enabled=False), NotificationClient(env.settings) as nc:
        results = await nc.async_trigger_multiple_notifications([*good, draft, 999_999], concurrency=3)
    by_id = {r.notification_id: r for r in results}
    assert all(by_id[i].outcome is Outcome.SENT for i in good), [by_id[i] for i in good]
    assert by_id[draft].outcome is Outcome.REJECTED and "DRAFT" in (by_id[draft].reason or "")
    assert by_id[999_999].outcome is Outcome.REJECTED and "does not exist" in (by_id[999_999].reason or "")
    assert env.stats()["deliveries"] == 10
