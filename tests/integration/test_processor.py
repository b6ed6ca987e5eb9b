"""The trigger core on a real Postgres and the HTTP emulator, without Temporal: I1, I2, I5, I6 at the source."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import SecretStr

from tests.support import DB_PASSWORD, NOVU_SECRET, Env, processor_for
from xnovu.core.models import Outcome, TriggerResult
from xnovu.errors import NovuConfigurationError
from xnovu.service import processor as processor_module
from xnovu.service.processor import NotificationProcessor


@pytest.fixture
async def processor(env: Env) -> AsyncIterator[NotificationProcessor]:
    async with processor_for(env) as processor:
        yield processor


async def test_sends_every_recipient_and_records_seed_compatible_details(
    env: Env, processor: NotificationProcessor
) -> None:
    wf = await env.workflow("welcome", channels=("EMAIL", "PUSH"))
    [nid] = await env.insert(wf, recipients=4)
    result = await processor.process(nid)
    assert result.outcome is Outcome.SENT and result.success_count == 4 and result.total_recipients == 4
    row = await env.row(nid)
    assert row["status"] == "SENT" and row["attempts"] == 1 and row["channels"] == ["EMAIL", "PUSH"]
    assert row["processed_at"] is not None and row["next_attempt_at"] is None
    details = row["error_details"]
    assert set(details) >= {"novu_transaction_ids", "results", "successCount", "totalRecipients", "timestamp"}
    assert {r["recipientId"] for r in details["results"]} == {str(r) for r in row["recipients"]}
    assert env.stats()["deliveries"] == 4


@pytest.mark.parametrize(
    ("setup_sql", "reason_part"),
    [
        ("UPDATE notify.ent_notification SET publish_status = 'DRAFT' WHERE id = $1", "DRAFT"),
        ("UPDATE notify.ent_notification SET publish_status = 'DISCARD' WHERE id = $1", "DISCARD"),
        ("UPDATE notify.ent_notification SET publish_status = 'DELETED' WHERE id = $1", "DELETED"),
        ("UPDATE notify.ent_notification SET publish_status = 'NONE' WHERE id = $1", "NONE"),
        ("UPDATE notify.ent_notification SET deactivated = true WHERE id = $1", "deactivated"),
        (
            "UPDATE notify.ent_notification SET notification_status = 'RETRACTED', retraction_reason = 'oops' "
            "WHERE id = $1",
            "retracted: oops",
        ),
        ("UPDATE notify.ent_notification SET scheduled_for = now() + interval '1 hour' WHERE id = $1", "scheduled for"),
        (
            "UPDATE notify.ent_notification_workflow SET publish_status = 'DRAFT' "
            "WHERE id = (SELECT notification_workflow_id FROM notify.ent_notification WHERE id = $1)",
            "workflow 'welcome' is DRAFT",
        ),
        (
            "UPDATE notify.ent_notification_workflow SET deactivated = true "
            "WHERE id = (SELECT notification_workflow_id FROM notify.ent_notification WHERE id = $1)",
            "workflow 'welcome' is deactivated",
        ),
    ],
)
async def test_must_not_send_cases_make_no_novu_call_and_leave_a_reason(
    env: Env, processor: NotificationProcessor, setup_sql: str, reason_part: str
) -> None:
    wf = await env.workflow("welcome")
    [nid] = await env.insert(wf, recipients=2)
    await env.execute(setup_sql, nid)
    result = await processor.process(nid)
    assert result.outcome in (Outcome.REJECTED, Outcome.DEAD_LETTERED)
    assert result.reason is not None and reason_part in result.reason
    assert env.stats()["requests"] == 0, "I1: no Novu call"
    if result.outcome is Outcome.DEAD_LETTERED:  # a workflow problem is permanent: the row says why
        row = await env.row(nid)
        assert row["status"] == "FAILED" and row["dead_lettered_at"] is not None
        assert reason_part in row["error_details"]["error"]


async def test_missing_workflow_dead_letters_without_a_call(env: Env, processor: NotificationProcessor) -> None:
    wf = await env.workflow("welcome")
    [nid] = await env.insert(wf)
    # A database without the foreign key (as some Supabase copies are) can hold a dangling workflow id.
    await env.execute(
        "ALTER TABLE notify.ent_notification DROP CONSTRAINT ent_notification_notification_workflow_id_fkey"
    )
    await env.execute("UPDATE notify.ent_notification SET notification_workflow_id = 987654 WHERE id = $1", nid)
    result = await processor.process(nid)
    assert result.outcome is Outcome.DEAD_LETTERED and "does not exist" in (result.reason or "")
    assert env.stats()["requests"] == 0


async def test_transient_failures_then_success_deliver_each_recipient_once(
    env: Env, processor: NotificationProcessor
) -> None:
    wf = await env.workflow("welcome")
    ids = await env.insert(wf, 10, recipients=3)
    env.configure_emulator(error_rate=0.5, seed=7)
    # Side by side, as a worker runs them: each row's retries back off (0.5 s, 1 s) while the others send.
    results = list(await asyncio.gather(*(processor.process(i) for i in ids)))
    env.configure_emulator(error_rate=0.0)
    for _ in range(5):  # retries, as the failed poll would make them
        for r in list(results):
            if r.outcome is Outcome.RETRY:
                results.append(await processor.process(r.notification_id))
    assert await env.all_in(ids, "SENT")
    stats = env.stats()
    assert stats["deliveries"] == 30 and stats["duplicate_deliveries"] == 0
    assert stats["status_codes"].get("500", 0) > 0, "the emulator really failed some requests"


async def test_retry_after_partial_failure_resends_only_unacknowledged_recipients(
    env: Env, processor: NotificationProcessor
) -> None:
    wf = await env.workflow("welcome")
    [nid] = await env.insert(wf, recipients=6)
    env.configure_emulator(error_rate=0.5, seed=3)
    first = await processor.process(nid)
    env.configure_emulator(error_rate=0.0)
    assert first.outcome is Outcome.RETRY, "seed 3 fails some but not all recipients"
    assert 0 < first.success_count < 6
    row = await env.row(nid)
    assert row["status"] == "FAILED" and row["next_attempt_at"] is not None
    assert row["error_details"]["dead_letter"] is False and row["error_details"]["attempt"] == 1
    acked_first = {e["subscriberId"] for e in env.deliveries()}
    second = await processor.process(nid)
    assert second.outcome is Outcome.SENT and second.success_count == 6 and second.attempt == 2
    resent = [e["subscriberId"] for e in env.deliveries()[len(acked_first) :]]
    assert set(resent).isdisjoint(acked_first), "acknowledged recipients are never triggered again (I2)"
    assert env.stats()["duplicate_deliveries"] == 0


async def test_exhausted_attempts_dead_letter_with_the_last_error(env: Env) -> None:
    async with processor_for(env, max_attempts=2) as proc:
        wf = await env.workflow("welcome")
        [nid] = await env.insert(wf)
        env.configure_emulator(error_rate=1.0)
        assert (await proc.process(nid)).outcome is Outcome.RETRY
        last = await proc.process(nid)
        assert last.outcome is Outcome.DEAD_LETTERED and "gave up after 2 attempts" in (last.reason or "")
        row = await env.row(nid)
        assert row["dead_lettered_at"] is not None and row["error_details"]["dead_letter"] is True
        again = await proc.process(nid)
        assert again.outcome is Outcome.REJECTED and "dlq requeue" in (again.reason or "")


async def test_poison_rows_fail_alone_and_the_rest_of_the_batch_is_sent(
    env: Env, processor: NotificationProcessor
) -> None:
    wf = await env.workflow("welcome")
    good = await env.insert(wf, 4, recipients=2)
    [array_payload, empty, huge, null_recipient] = await env.insert(wf, 4)
    await env.execute("UPDATE notify.ent_notification SET payload = '[1,2]' WHERE id = $1", array_payload)
    await env.execute("UPDATE notify.ent_notification SET recipients = '{}' WHERE id = $1", empty)
    await env.execute(
        "UPDATE notify.ent_notification SET payload = jsonb_build_object('blob', repeat('x', 600000)) WHERE id = $1",
        huge,
    )
    await env.execute(
        "UPDATE notify.ent_notification SET recipients = ARRAY[NULL, gen_random_uuid()] WHERE id = $1", null_recipient
    )
    results = await processor.process_many([array_payload, *good, empty, huge, null_recipient], concurrency=3)
    by_id = {r.notification_id: r for r in results}
    assert all(by_id[i].outcome is Outcome.SENT for i in good)
    expected = {
        array_payload: "payload must be a JSON object",
        empty: "recipients is empty",
        huge: "over Novu's limit",
        null_recipient: "null entry",
    }
    for nid, text in expected.items():
        row = await env.row(nid)
        assert row["status"] == "FAILED" and row["dead_lettered_at"] is not None
        assert text in row["error_details"]["error"]
    assert env.stats()["deliveries"] == 8


async def test_workflow_key_novu_rejects_is_permanent_for_that_row_only(
    env: Env, processor: NotificationProcessor
) -> None:
    env.configure_emulator(workflows=["welcome"])
    good_wf = await env.workflow("welcome")
    bad_wf = await env.workflow("no-such-workflow")
    [good] = await env.insert(good_wf)
    [bad] = await env.insert(bad_wf)
    results = await processor.process_many([bad, good], concurrency=2)
    assert [r.outcome for r in results] == [Outcome.DEAD_LETTERED, Outcome.SENT]
    assert "workflow_not_found" in (await env.row(bad))["error_details"]["error"]


async def test_duplicate_recipients_are_one_subscriber(env: Env, processor: NotificationProcessor) -> None:
    wf = await env.workflow("welcome")
    [nid] = await env.insert(wf)
    await env.execute("UPDATE notify.ent_notification SET recipients = recipients || recipients WHERE id = $1", nid)
    result = await processor.process(nid)
    assert result.outcome is Outcome.SENT and result.total_recipients == 1
    assert env.stats()["deliveries"] == 1


async def test_rejected_api_key_is_a_configuration_error_that_burns_no_attempt(env: Env) -> None:
    async with processor_for(env, novu_secret_key=SecretStr("wrong-key")) as proc:
        wf = await env.workflow("welcome")
        ids = await env.insert(wf, 3, recipients=5)
        with pytest.raises(NovuConfigurationError, match="NOVU_SECRET_KEY"):
            await proc.process(ids[0])
        assert env.stats()["requests"] == 1, "one 401 stops the whole call: no request per recipient"
        row = await env.row(ids[0])
        assert row["status"] == "PROCESSING" and row["attempts"] == 1 and row["dead_lettered_at"] is None
    # Once the key is fixed, the same attempt finishes (no attempt was burnt).
    async with processor_for(env) as good:
        result = await good.process(ids[0], attempt=1, direct=True)
    assert result.outcome is Outcome.SENT and result.attempt == 1


@pytest.mark.parametrize(("status", "fix"), [(402, "the Novu plan limit has been reached"), (403, "NOVU_SECRET_KEY")])
async def test_plan_limit_and_forbidden_hold_the_attempt_like_a_rejected_key(env: Env, status: int, fix: str) -> None:
    """402 (docs/novu-contract.md: the plan limit) and 403 wait like a 401: no attempt burnt, nothing dead-lettered."""
    wf = await env.workflow("welcome")
    [nid] = await env.insert(wf, recipients=3)
    env.configure_emulator(config_error_status=status)
    async with processor_for(env) as proc:
        with pytest.raises(NovuConfigurationError, match=f"HTTP {status}") as info:
            await proc.process(nid)
        assert fix in str(info.value)
        row = await env.row(nid)
        assert row["status"] == "PROCESSING" and row["attempts"] == 1 and row["dead_lettered_at"] is None
        env.configure_emulator(config_error_status=None)  # the plan is upgraded: the same attempt finishes
        result = await proc.process(nid, attempt=1, direct=True)
    assert result.outcome is Outcome.SENT and result.attempt == 1 and env.stats()["deliveries"] == 3


async def test_secrets_never_reach_logs_error_details_or_results(
    env: Env, processor: NotificationProcessor, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wf = await env.workflow("welcome")
    ids = await env.insert(wf, 3, recipients=2)
    env.configure_emulator(error_rate=1.0)
    results = [await processor.process(i) for i in ids]
    async with processor_for(env, novu_secret_key=SecretStr("x")) as bad:
        with pytest.raises(NovuConfigurationError) as info:
            await bad.process_many(ids, 3)
    assert NOVU_SECRET not in str(info.value)
    rows = [await env.row(i) for i in ids]
    haystack = caplog.text + repr(results) + repr(rows) + repr(env.settings)
    assert NOVU_SECRET not in haystack and DB_PASSWORD not in haystack


async def test_scheduled_in_the_past_is_due_and_sent(env: Env, processor: NotificationProcessor) -> None:
    wf = await env.workflow("welcome")
    [nid] = await env.insert(wf, scheduled_for=datetime.now(UTC) - timedelta(minutes=5))
    assert (await processor.process(nid)).outcome is Outcome.SENT


async def test_pieces_go_through_windows_and_carry_the_counts_of_the_earlier_ones(
    env: Env, processor: NotificationProcessor, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A piece reads the ledger of one window only (docs/performance.md); the attempt's counts stay those of every
    recipient: 25 recipients in windows of 10, a third of the requests failing, then a retry attempt."""
    monkeypatch.setattr(processor_module, "PIECE_RECIPIENTS", 10)
    wf = await env.workflow("welcome")
    [nid] = await env.insert(wf, recipients=25)
    env.configure_emulator(error_rate=0.3, seed=5)

    async def attempt(number: int | None) -> tuple[TriggerResult, int]:
        result = await processor.process(nid, number, time_budget_s=60)
        pieces = 1
        while result.more:
            assert result.progress is not None and result.attempt is not None
            result = await processor.process(
                nid, result.attempt, time_budget_s=60, progress=result.progress, direct=True
            )
            pieces += 1
        return result, pieces

    first, pieces = await attempt(None)
    assert pieces == 3, "three windows of at most 10"
    acked = await env.repo.pool.fetchval(
        "SELECT count(*) FROM notify.ent_notification_delivery WHERE notification_id = $1 AND status = 'SENT'", nid
    )
    assert first.outcome is Outcome.RETRY and 0 < acked < 25
    assert first.success_count == acked and first.failed_count == 25 - acked and first.total_recipients == 25
    row = await env.row(nid)
    assert row["error_details"]["successCount"] == acked
    env.configure_emulator(error_rate=0.0)
    second, _ = await attempt(None)
    assert second.outcome is Outcome.SENT and second.success_count == 25 and second.failed_count == 0
    stats = env.stats()
    assert stats["deliveries"] == 25 and stats["duplicate_deliveries"] == 0
