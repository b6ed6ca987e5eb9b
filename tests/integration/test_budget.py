"""The Novu token budget is deployment-wide: several workers share NOVU_RATE_LIMIT_RPS through Postgres."""

from __future__ import annotations

import asyncio
import time

from tests.support import Env
from xnovu.db.budget import PostgresTokenBudget
from xnovu.novu.fairqueue import LARGEST_REQUEST


async def test_two_workers_together_stay_within_one_budget(env: Env) -> None:
    # Two "worker processes" (two budgets on the same row): 20 tokens/s, burst 10, 50 single triggers in all.
    a = PostgresTokenBudget(env.repo.pool, 20, capacity=10)
    b = PostgresTokenBudget(env.repo.pool, 20, capacity=10)
    started = time.monotonic()
    await asyncio.gather(*(budget.acquire(1) for budget in (a, b) for _ in range(25)))
    elapsed = time.monotonic() - started
    assert elapsed >= (50 - 10) / 20 * 0.9, f"50 tokens at 20/s with a burst of 10 took only {elapsed:.2f} s"
    assert elapsed < 5
    assert a.snapshot()["consumed_total"] + b.snapshot()["consumed_total"] == 50


async def test_a_429_seen_by_one_worker_holds_back_the_others(env: Env) -> None:
    a = PostgresTokenBudget(env.repo.pool, 1000)
    b = PostgresTokenBudget(env.repo.pool, 1000)
    await b.acquire(1)
    a.penalize(1.0)
    await asyncio.sleep(0.1)  # the shared penalty is written in the background
    started = time.monotonic()
    await b.acquire(200)  # more than b's own lease: it must go back to the shared row
    assert time.monotonic() - started >= 0.7


async def test_a_bulk_request_is_always_affordable_even_at_the_free_tier_rate(env: Env) -> None:
    budget = PostgresTokenBudget(env.repo.pool, 60)
    started = time.monotonic()
    await budget.acquire(100)
    assert time.monotonic() - started < 1.0


async def test_an_urgent_request_overtakes_normal_ones_queued_before_it(env: Env) -> None:
    """Issue 17: the waiters of one process were FIFO, so an urgent row's request waited behind every normal request
    already queued (about ten seconds of budget). Now the most urgent waiter is served next."""
    budget = PostgresTokenBudget(env.repo.pool, 50, capacity=10)
    await budget.acquire(10)  # the bucket is empty: everyone below waits
    served: list[str] = []

    async def one(name: str, urgency: int, enterprise: str | None) -> None:
        await budget.acquire(1, urgency=urgency, enterprise=enterprise)
        served.append(name)

    normal = [asyncio.create_task(one(f"normal{i}", 0, "a0000000-0000-4000-8000-000000000001")) for i in range(100)]
    await asyncio.sleep(0.1)  # the normal requests are queued first
    started = time.monotonic()
    await one("urgent", 2, "b0000000-0000-4000-8000-000000000002")
    waited = time.monotonic() - started
    await asyncio.gather(*normal)
    print(f"\nurgent request served after {waited:.3f} s, {served.index('urgent')} of 100 normal ones before it")
    assert served.index("urgent") <= 10, served[:15]  # at most what was already being granted (one lease)
    assert waited < 0.5  # FIFO: 100 tokens ahead at 50/s, about 2 s


async def test_a_second_enterprise_is_not_queued_behind_the_first_ones_backlog(env: Env) -> None:
    budget = PostgresTokenBudget(env.repo.pool, 200, capacity=10)
    await budget.acquire(10)
    served: list[str] = []

    async def one(enterprise: str) -> None:
        await budget.acquire(1, enterprise=enterprise)
        served.append(enterprise)

    backlog = [asyncio.create_task(one("a")) for _ in range(400)]  # 2 s of budget
    await asyncio.sleep(0.1)
    started = time.monotonic()
    await asyncio.gather(*(one("b") for _ in range(20)))
    waited = time.monotonic() - started
    await asyncio.gather(*backlog)
    print(f"\n20 requests of enterprise b served in {waited:.3f} s behind a backlog of 400 of enterprise a")
    assert waited < 1.0  # FIFO: 2 s
    assert max(i for i, e in enumerate(served) if e == "b") < 20 + LARGEST_REQUEST + 20


async def test_an_urgent_notification_is_sent_before_normal_ones_already_waiting_for_tokens(env: Env) -> None:
    """End to end through the trigger core: the row's urgency and enterprise reach the budget (SendControl), so an
    emergency committed after a campaign of another enterprise is sent at once, not after the campaign's tokens."""
    from xnovu.db.repository import NewNotification, insert_notifications
    from xnovu.service.processor import NotificationProcessor
    from xnovu.worker.composition import build_processor, novu_client

    wf = await env.workflow("welcome")
    normal = await insert_notifications(
        env.repo,
        wf,
        [NewNotification(f"n{i}", [f"00000000-0000-4000-8000-{i:012d}"], {}) for i in range(40)],
        enterprise_id="a0000000-0000-4000-8000-000000000001",
    )
    [urgent] = await insert_notifications(
        env.repo,
        wf,
        [NewNotification("fire", ["ffffffff-0000-4000-8000-000000000001"], {})],
        enterprise_id="b0000000-0000-4000-8000-000000000002",
    )
    await env.execute("UPDATE notify.ent_notification SET xnovu_priority = 2 WHERE id = $1", urgent)
    budget = PostgresTokenBudget(env.repo.pool, 20, capacity=5)
    await budget.acquire(5)  # empty: the 40 normal rows wait 2 s for their tokens
    client = novu_client(env.settings, budget)
    processor: NotificationProcessor = build_processor(env.settings, env.repo, client)
    try:
        campaign = [asyncio.create_task(processor.process(nid)) for nid in normal]
        await asyncio.sleep(0.2)  # the campaign's requests are queued for tokens
        started = time.monotonic()
        result = await processor.process(urgent)
        waited = time.monotonic() - started
        await asyncio.gather(*campaign)
    finally:
        await client.aclose()
    order = [d["subscriberId"] for d in env.deliveries()]
    position = order.index("ffffffff-0000-4000-8000-000000000001")
    print(f"\nurgent notification sent in {waited:.3f} s, {position} of 40 normal ones before it (FIFO: about 2 s, 40)")
    assert result.outcome.value == "sent"
    assert waited < 0.6
    assert position <= 8
