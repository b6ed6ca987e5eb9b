"""The Novu token budget is deployment-wide: several workers share NOVU_RATE_LIMIT_RPS through Postgres."""

from __future__ import annotations

import asyncio
import time

from tests.support import Env
from xnovu.db.budget import PostgresTokenBudget


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
