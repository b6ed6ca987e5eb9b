"""LocalTokenBucket: refill arithmetic, the order of waiters (xnovu/novu/fairqueue.py) and 429 penalties, on a fake
clock (no real waiting)."""

from __future__ import annotations

import asyncio

import pytest

from xnovu.novu.ratelimit import LocalTokenBucket, TokenBudget


class FakeTime:
    """A clock that only moves when the bucket sleeps, so waits are exact and instant."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


def make(rate: float, capacity: float | None = None) -> tuple[LocalTokenBucket, FakeTime]:
    t = FakeTime()
    return LocalTokenBucket(rate, capacity, clock=t.clock, sleep=t.sleep), t


def test_default_capacity_always_fits_a_bulk_request() -> None:
    assert make(10)[0].snapshot()["capacity"] == 100
    assert make(600)[0].snapshot()["capacity"] == 600
    assert make(10, capacity=50)[0].snapshot()["capacity"] == 50


def test_satisfies_the_budget_protocol() -> None:
    assert isinstance(make(60)[0], TokenBudget)


def test_rejects_non_positive_rate() -> None:
    with pytest.raises(ValueError):
        LocalTokenBucket(0)


async def test_starts_full_and_spends_without_waiting() -> None:
    bucket, t = make(60)
    await bucket.acquire(100)
    assert t.sleeps == []
    snap = bucket.snapshot()
    assert snap["available"] == 0
    assert snap["consumed_total"] == 100
    assert set(snap) == {"rate_per_s", "capacity", "available", "consumed_total"}


async def test_waits_exactly_for_the_missing_tokens() -> None:
    bucket, t = make(10)  # capacity 100
    await bucket.acquire(100)
    await bucket.acquire(5)  # 5 tokens at 10/s
    assert t.now - 1000.0 == pytest.approx(0.5)
    await bucket.acquire(100)  # bucket empty again: a full refill takes 10 s
    assert t.now - 1000.0 == pytest.approx(10.5)
    assert bucket.snapshot()["consumed_total"] == 205


async def test_refill_is_capped_at_capacity() -> None:
    bucket, t = make(10)
    await bucket.acquire(100)
    t.now += 3600
    assert bucket.snapshot()["available"] == 100


async def test_cost_above_capacity_is_clamped_instead_of_waiting_forever() -> None:
    bucket, t = make(10, capacity=50)
    await bucket.acquire(100)
    assert bucket.snapshot()["available"] == 0
    assert t.sleeps == []


async def test_waiters_are_served_in_arrival_order() -> None:
    """A bulk waiting for 100 tokens is not overtaken by later 1-token singles."""
    bucket, _ = make(10)
    await bucket.acquire(100)
    order: list[str] = []

    async def take(name: str, cost: int) -> None:
        await bucket.acquire(cost)
        order.append(name)

    tasks = [asyncio.create_task(take("bulk", 100))]
    await asyncio.sleep(0)
    tasks += [asyncio.create_task(take(f"single{i}", 1)) for i in range(5)]
    await asyncio.gather(*tasks)
    assert order == ["bulk", "single0", "single1", "single2", "single3", "single4"]


async def test_penalty_blocks_every_acquisition_for_its_duration() -> None:
    bucket, t = make(60)
    bucket.penalize(2.5)
    await bucket.acquire(1)
    assert t.now - 1000.0 == pytest.approx(2.5)


async def test_penalty_extends_but_never_shortens() -> None:
    bucket, t = make(60)
    bucket.penalize(3)
    bucket.penalize(1)
    await bucket.acquire(1)
    assert t.now - 1000.0 == pytest.approx(3)


async def test_penalty_during_a_wait_is_honoured() -> None:
    bucket, t = make(10)
    await bucket.acquire(100)
    waiter = asyncio.create_task(bucket.acquire(10))
    await asyncio.sleep(0)  # the waiter has slept its 1 s refill (fake time jumps) and not yet re-checked
    assert t.now - 1000.0 == pytest.approx(1)
    bucket.penalize(5)  # blocked until t=6
    await waiter
    assert t.now - 1000.0 == pytest.approx(6)
    assert bucket.snapshot()["consumed_total"] == 110


async def test_real_clock_small_rate() -> None:
    """Smoke test on the real clock: 5 tokens at 100/s after draining takes ~50 ms."""
    bucket = LocalTokenBucket(100, capacity=5)
    await bucket.acquire(5)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await bucket.acquire(5)
    assert 0.03 <= loop.time() - started < 1.0


async def test_turns_pass_round_robin_across_notifications_and_in_order_within_one() -> None:
    """One notification's many requests queue for tokens; another notification's request (same enterprise) gets the
    next turn, not the last (docs/priority.md "The token budget"). Within a notification, arrival order."""
    bucket, _ = make(10, capacity=10)
    await bucket.acquire(10)  # empty: everyone below waits for the refill, in turn
    served: list[str] = []

    async def one(name: str, notification: int) -> None:
        await bucket.acquire(5, notification=notification)
        served.append(name)

    # Created in this order, so queued in this order: the big notification's requests first.
    tasks = [asyncio.create_task(one(f"big-{i}", 1)) for i in range(4)]
    tasks.append(asyncio.create_task(one("small-0", 2)))
    await asyncio.gather(*tasks)
    assert served == ["big-0", "small-0", "big-1", "big-2", "big-3"]


async def test_turns_without_notifications_are_first_come_first_served_and_a_cancelled_waiter_passes_its_turn() -> (
    None
):
    bucket, _ = make(10, capacity=10)
    await bucket.acquire(10)
    served: list[int] = []

    async def one(i: int) -> None:
        await bucket.acquire(5)
        served.append(i)

    tasks = [asyncio.create_task(one(i)) for i in range(4)]
    await asyncio.sleep(0)
    tasks[2].cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    assert served == [0, 1, 3]
    assert bucket.snapshot()["consumed_total"] == 25, "the cancelled waiter was not charged"
    await bucket.acquire(1, notification="free again")


async def test_the_local_bucket_serves_the_most_urgent_and_enterprises_by_turns_too() -> None:
    """One scheduler for both budgets: LocalTokenBucket orders its waiters as PostgresTokenBudget does."""
    bucket, _ = make(10, capacity=10)
    await bucket.acquire(10)
    served: list[str] = []

    async def one(name: str, urgency: int, enterprise: str) -> None:
        await bucket.acquire(1, urgency=urgency, enterprise=enterprise)
        served.append(name)

    tasks = [asyncio.create_task(one(f"a{i}", 0, "a")) for i in range(300)]
    tasks += [asyncio.create_task(one(f"b{i}", 0, "b")) for i in range(3)]
    tasks.append(asyncio.create_task(one("urgent", 1, "c")))
    await asyncio.gather(*tasks)
    assert served.index("urgent") <= 1, "at most the head already waiting goes before it"
    assert max(served.index(f"b{i}") for i in range(3)) < 110, "b waits one turn of a (100 tokens), not 300"
