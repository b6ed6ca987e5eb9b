"""Client-side token budget for Novu's `events` rate-limit bucket.

Novu meters every `/v1/events/*` call against one token bucket per environment: a single trigger costs 1
token, a bulk request 100 (docs/novu-contract.md "Rate limits"). Spending from a local budget first keeps xnovu
under the plan's limit instead of discovering it through 429s, and a 429's `Retry-After` pauses every sender at
once through :meth:`TokenBudget.penalize`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Hashable, Mapping
from typing import Protocol, runtime_checkable

from xnovu.novu.fairqueue import FairTurns

__all__ = ["LocalTokenBucket", "TokenBudget"]

_EPSILON = 1e-9


@runtime_checkable
class TokenBudget(Protocol):
    """What :class:`~xnovu.novu.client.NovuClient` needs from a rate limiter; one may serve many clients."""

    async def acquire(
        self, cost: int, *, urgency: int = 0, enterprise: str | None = None, notification: Hashable | None = None
    ) -> None:
        """Wait until `cost` tokens can be spent, then spend them. `urgency` (0 normal, above 0 more urgent),
        `enterprise` and `notification` say whose request it is: the budgets of this package serve the most urgent
        first, enterprises by weighted fair queueing and the notifications of one enterprise round-robin
        (xnovu/novu/fairqueue.py)."""
        ...

    def penalize(self, seconds: float) -> None:
        """Hold back every acquisition for `seconds` (Novu answered 429 with this Retry-After)."""
        ...

    def snapshot(self) -> dict[str, float]:
        """`rate_per_s`, `capacity`, `available` and `consumed_total`, for /status."""
        ...


class LocalTokenBucket:
    """A token bucket for one process: refills continuously at `rate_per_s` up to `capacity`.

    Waiters take turns (:class:`~xnovu.novu.fairqueue.FairTurns`, the same order as the worker's
    :class:`~xnovu.db.budget.PostgresTokenBudget`; the head waiter keeps its place while it sleeps against every
    waiter that would finish later), so a bulk request waiting for 100 tokens is not starved by a stream of 1-token
    singles, and one notification's many requests do not keep every other notification's waiting.
    """

    def __init__(
        self,
        rate_per_s: float,
        capacity: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        weights: Mapping[str, float] | None = None,
    ) -> None:
        if not rate_per_s > 0:
            raise ValueError("rate_per_s must be positive")
        # A bulk request costs 100 tokens: a smaller bucket could never afford one.
        cap = max(rate_per_s, 100.0) if capacity is None else float(capacity)
        if not cap > 0:
            raise ValueError("capacity must be positive")
        self._rate = float(rate_per_s)
        self._capacity = cap
        self._clock = clock
        self._sleep = sleep
        self._available = cap
        self._last = clock()
        self._blocked_until = float("-inf")
        self._consumed = 0.0
        self._turns = FairTurns(weights)

    def __repr__(self) -> str:
        return f"LocalTokenBucket(rate_per_s={self._rate:g}, capacity={self._capacity:g})"

    def _refill(self) -> float:
        now = self._clock()
        if now > self._last:
            self._available = min(self._capacity, self._available + (now - self._last) * self._rate)
            self._last = now
        return now

    async def acquire(
        self, cost: int, *, urgency: int = 0, enterprise: str | None = None, notification: Hashable | None = None
    ) -> None:
        """Wait for the turn (xnovu/novu/fairqueue.py: most urgent first, enterprises by weight, notifications
        round-robin, arrival order within one) until `cost` tokens are available and no penalty is running, then
        spend them.

        A cost above the capacity is clamped to the capacity (waits for a full bucket and drains it) rather
        than waiting forever.
        """
        if cost <= 0:
            return
        need = min(float(cost), self._capacity)
        async with self._turns.turn(need, urgency, enterprise, notification) as turn:
            while True:
                # The head sleeps through `self._sleep` (a test's clock), so a more urgent waiter arriving meanwhile
                # goes first once that sleep ends, not at once as with PostgresTokenBudget.
                await turn.until_head()
                now = self._refill()
                if now < self._blocked_until:
                    await self._sleep(self._blocked_until - now)
                    continue
                # The tolerance keeps float rounding (0.1 s * 10/s = 0.9999...) from spinning on tiny sleeps.
                if self._available + _EPSILON >= need:
                    self._available = max(0.0, self._available - need)
                    self._consumed += cost
                    turn.served()
                    return
                await self._sleep((need - self._available) / self._rate)

    def penalize(self, seconds: float) -> None:
        """Block every acquisition for `seconds` from now (extends, never shortens, a running penalty)."""
        if seconds > 0:
            self._blocked_until = max(self._blocked_until, self._clock() + seconds)

    def snapshot(self) -> dict[str, float]:
        """Current state for /status; `available` is refilled up to now."""
        self._refill()
        return {
            "rate_per_s": self._rate,
            "capacity": self._capacity,
            "available": self._available,
            "consumed_total": self._consumed,
        }
