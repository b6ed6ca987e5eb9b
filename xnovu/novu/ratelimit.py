"""Client-side token budget for Novu's `events` rate-limit bucket.

Novu meters every `/v1/events/*` call against one token bucket per environment: a single trigger costs 1
token, a bulk request 100 (docs/novu-contract.md "Rate limits"). Spending from a local budget first keeps xnovu
under the plan's limit instead of discovering it through 429s, and a 429's `Retry-After` pauses every sender at
once through :meth:`TokenBudget.penalize`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Protocol, runtime_checkable

__all__ = ["LocalTokenBucket", "TokenBudget"]

_EPSILON = 1e-9


@runtime_checkable
class TokenBudget(Protocol):
    """What :class:`~xnovu.novu.client.NovuClient` needs from a rate limiter; one may serve many clients."""

    async def acquire(self, cost: int, *, urgency: int = 0, enterprise: str | None = None) -> None:
        """Wait until `cost` tokens can be spent, then spend them. `urgency` (0 normal, above 0 more urgent) and
        `enterprise` say whose request it is: a budget may serve the most urgent first and enterprises by turns."""
        ...

    def penalize(self, seconds: float) -> None:
        """Hold back every acquisition for `seconds` (Novu answered 429 with this Retry-After)."""
        ...

    def snapshot(self) -> dict[str, float]:
        """`rate_per_s`, `capacity`, `available` and `consumed_total`, for /status."""
        ...


class LocalTokenBucket:
    """A token bucket for one process: refills continuously at `rate_per_s` up to `capacity`.

    Waiters are served strictly in arrival order (`asyncio.Lock` is FIFO and the head waiter holds it while it
    sleeps), so a bulk request waiting for 100 tokens is not starved by a stream of 1-token singles.
    """

    def __init__(
        self,
        rate_per_s: float,
        capacity: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
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
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"LocalTokenBucket(rate_per_s={self._rate:g}, capacity={self._capacity:g})"

    def _refill(self) -> float:
        now = self._clock()
        if now > self._last:
            self._available = min(self._capacity, self._available + (now - self._last) * self._rate)
            self._last = now
        return now

    async def acquire(self, cost: int, *, urgency: int = 0, enterprise: str | None = None) -> None:
        """Wait (FIFO) until `cost` tokens are available and no penalty is running, then spend them. This bucket
        ignores `urgency` and `enterprise` (one process, tools and tests; the worker's budget is
        :class:`~xnovu.db.budget.PostgresTokenBudget`, which serves by them).

        A cost above the capacity is clamped to the capacity (waits for a full bucket and drains it) rather
        than waiting forever.
        """
        if cost <= 0:
            return
        need = min(float(cost), self._capacity)
        async with self._lock:
            while True:
                now = self._refill()
                if now < self._blocked_until:
                    await self._sleep(self._blocked_until - now)
                    continue
                # The tolerance keeps float rounding (0.1 s * 10/s = 0.9999...) from spinning on tiny sleeps.
                if self._available + _EPSILON >= need:
                    self._available = max(0.0, self._available - need)
                    self._consumed += cost
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
