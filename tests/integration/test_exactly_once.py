"""At most once with Novu's idempotency off (docs/novu-contract.md "What holds with idempotency on and off"), on the
real stack: answers that come too late, pieces that outlive their worker's turn, crashes with a request on the wire.

Without idempotency Novu runs every request it receives, so the only protection against a second delivery is to
never resend what Novu may have processed: unknown outcomes are resolved through the activity feed first, and a
piece that a newer piece of the same attempt replaced sends nothing more (its fencing token).
"""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from tests.support import Env, eventually, processor_for
from xnovu.core.models import Outcome
from xnovu.metrics import METRICS
from xnovu.novu.client import NovuClient, RecipientEvent, transaction_id_for

UNKNOWN_ROWS = (
    "SELECT count(*) FROM notify.ent_notification_delivery d "
    "JOIN notify.ent_notification n ON n.id = d.notification_id "
    "WHERE d.status <> 'SENT' AND d.unknown_since IS NOT NULL AND n.id = ANY($1::bigint[])"
)


def _duplicates(env: Env) -> int:
    pairs = Counter((e["subscriberId"], e["transactionId"]) for e in env.deliveries())
    return sum(n - 1 for n in pairs.values())


async def test_answers_that_come_too_late_cause_no_duplicate_with_idempotency_off(env: Env) -> None:
    """The issue's measurement at small scale: idempotency off, 10 % of requests processed but answered after the
    client's timeout, 150 single-recipient rows through a real worker. Before: every late answer was retried
    blindly (a duplicate each, recorded nowhere). Now each is looked up in the feed first: no duplicate."""
    env.configure_emulator(idempotency=False, timeout_rate=0.1, timeout_delay_s=5.0, seed=16)
    wf = await env.workflow("welcome")
    ids = await env.insert(wf, 150)
    async with env.worker(novu_timeout_ms=1_000, novu_outcome_settle_ms=100):
        await eventually(lambda: env.all_in(ids, "SENT"), timeout=90, interval=0.5)
    stats = env.stats()
    late = stats["status_codes"].get("201", 0) - stats["deliveries"]
    assert _duplicates(env) == 0 and stats["duplicate_deliveries"] == 0, (
        f"{_duplicates(env)} duplicates for {stats['deliveries']} deliveries"
    )
    assert stats["deliveries"] == 150
    assert stats["feed_lookups"] > 0, "the late answers were resolved through the activity feed"
    assert late <= 0


async def test_a_stale_piece_sends_nothing_after_a_newer_piece_of_its_attempt_began(env: Env) -> None:
    """A stalled worker's piece resumes after another worker re-ran the piece (its workflow task timed out): the
    attempt number is the same, so only the piece's fencing token tells them apart. The old piece's next fence
    fails and it sends nothing more."""
    env.configure_emulator(idempotency=False, latency_ms=300)
    wf = await env.workflow("welcome")
    [nid] = await env.insert(wf, recipients=1_000)
    async with processor_for(env) as processor:
        processor.request_concurrency = 1
        stale = asyncio.create_task(processor.process(nid, 1))

        async def first_recorded() -> bool:
            n = await env.repo.pool.fetchval(
                "SELECT count(*) FROM notify.ent_notification_delivery WHERE notification_id = $1 AND status = 'SENT'",
                nid,
            )
            return bool(n >= 100)

        await eventually(first_recorded, timeout=20, interval=0.02)
        newer = await env.repo.acquire(nid, 1, env.settings.processing_lease_ms)  # the piece re-run elsewhere
        assert newer is not None
        result = await stale
    assert result.outcome is Outcome.SKIPPED, result
    assert env.stats()["deliveries"] <= 200, "at most the request already past its fence when the newer piece began"
    assert _duplicates(env) == 0


async def test_a_crash_with_a_request_on_the_wire_is_resolved_through_the_feed_with_idempotency_off(env: Env) -> None:
    """A worker dies while a bulk request is in flight; Novu (idempotency off) processes it anyway. The retry of
    the piece finds the previous piece still open, looks the recipients it may have had in flight up in the feed,
    and resends only what Novu does not know."""
    env.configure_emulator(idempotency=False, latency_ms=300)
    wf = await env.workflow("welcome")
    [nid] = await env.insert(wf, recipients=500)
    async with processor_for(env, novu_outcome_settle_ms=100) as processor:
        processor.request_concurrency = 1
        task = asyncio.create_task(processor.process(nid, 1))

        async def two_recorded() -> bool:
            n = await env.repo.pool.fetchval(
                "SELECT count(*) FROM notify.ent_notification_delivery WHERE notification_id = $1 AND status = 'SENT'",
                nid,
            )
            return bool(n >= 200)

        await eventually(two_recorded, timeout=20, interval=0.02)
        await asyncio.sleep(0.1)  # the third bulk is on the wire
        task.cancel()  # the worker dies mid-piece
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.sleep(0.5)  # Novu finishes the request nobody waits for any more
        assert env.stats()["deliveries"] == 300, "the cut-off request was processed"
        result = await processor.process(nid, 1)  # Temporal runs the piece again
    assert result.outcome is Outcome.SENT and result.success_count == 500
    assert _duplicates(env) == 0 and env.stats()["deliveries"] == 500


async def test_an_outcome_the_feed_cannot_tell_is_held_recorded_and_counted(env: Env) -> None:
    """Late answer and the feed unavailable: the recipient is not resent blindly (at most once). The ledger says
    its outcome is unknown, /metrics counts it, and the attempt ends FAILED so a later attempt asks again."""
    before = METRICS.registry.get_sample_value("xnovu_novu_unknown_outcomes_total") or 0.0
    env.configure_emulator(idempotency=False, timeout_rate=1.0, timeout_delay_s=3.0, feed_error_rate=1.0)
    wf = await env.workflow("welcome")
    [nid] = await env.insert(wf)
    async with processor_for(env, novu_timeout_ms=500, novu_outcome_settle_ms=50) as processor:
        result = await processor.process(nid, 1)
        assert result.outcome is Outcome.RETRY, result
        assert await env.repo.pool.fetchval(UNKNOWN_ROWS, [nid]) == 1
        after = METRICS.registry.get_sample_value("xnovu_novu_unknown_outcomes_total") or 0.0
        assert after - before == 1
        assert env.stats()["deliveries"] == 1
        # The feed is back: the next attempt resolves the recipient instead of sending it again.
        env.configure_emulator(timeout_rate=0.0, feed_error_rate=0.0)
        await env.execute("UPDATE notify.ent_notification SET next_attempt_at = now() WHERE id = $1", nid)
        result = await processor.process(nid, 2)
    assert result.outcome is Outcome.SENT, result
    assert env.stats()["deliveries"] == 1 and _duplicates(env) == 0
    assert await env.repo.pool.fetchval(UNKNOWN_ROWS, [nid]) == 0


async def test_the_fence_requires_the_piece_that_holds_the_attempt(env: Env) -> None:
    """The fencing token at the level of the queries: a re-run of the piece (same attempt) takes the next token, and
    from then on the fence, the lease renewal and finalize refuse the old one."""
    wf = await env.workflow("welcome")
    [nid] = await env.insert(wf)
    lease = env.settings.processing_lease_ms
    first = await env.repo.acquire(nid, 1, lease)
    assert first is not None and await env.repo.fence(nid, 1, lease, first.piece)
    second = await env.repo.acquire(nid, 1, lease)
    assert second is not None and second.piece == first.piece + 1
    assert second.previous_piece_open_s is not None, "the first piece never ended: its requests may be on the wire"
    assert not await env.repo.fence(nid, 1, lease, first.piece)
    assert not await env.repo.finalize(nid, 1, status="SENT", error_details={}, piece=first.piece)
    assert await env.repo.fence(nid, 1, lease, second.piece)
    assert await env.repo.finalize(nid, 1, status="SENT", error_details={}, piece=second.piece)


async def test_the_settle_delay_lets_a_late_feed_entry_appear_before_the_look_up(env: Env) -> None:
    """Novu answers a trigger once its job is queued and creates the feed entry when its worker runs the job: a
    look-up right after a lost answer can miss an event Novu did process. The settle delay covers that lag; the
    limit (a lag longer than NOVU_OUTCOME_SETTLE_MS means a resend) is docs/novu-contract.md's."""
    assert env.settings.novu_secret_key is not None
    key = env.settings.novu_secret_key.get_secret_value()
    env.configure_emulator(idempotency=False, timeout_rate=1.0, timeout_delay_s=3.0, feed_delay_ms=400)
    event = RecipientEvent("subscriber-1", transaction_id_for(1, "subscriber-1"), 0)
    async with NovuClient(env.emulator.url, key, timeout_s=0.3, settle_s=0.6) as novu:
        [out] = await novu.trigger(workflow_key="welcome", payload={}, overrides=None, events=[event])
    assert out.outcome == "acknowledged" and env.stats()["deliveries"] == 1, "found in the feed, not resent"

    env.emulator.emulator.reset()  # keeps the config: the first request is answered too late again
    async with NovuClient(env.emulator.url, key, timeout_s=0.3, settle_s=0.0) as novu:
        task = asyncio.create_task(novu.trigger(workflow_key="welcome", payload={}, overrides=None, events=[event]))

        async def delivered_once() -> bool:
            return bool(env.stats()["deliveries"] == 1)

        await eventually(delivered_once, timeout=5, interval=0.02)
        env.configure_emulator(timeout_rate=0.0)  # the resend is answered in time
        [out] = await task
    assert out.outcome == "acknowledged"
    assert env.stats()["deliveries"] == 2, "without the settle delay the feed did not list it yet: resent (the limit)"
