"""Client-side token budget for Novu's `events` rate-limit bucket.

Novu meters every `/v1/events/*` call against one token bucket per environment: a single trigger costs 1
token, a bulk request 100 (docs/novu-contract.md "Rate limits"). Spending from a local budget first keeps xnovu
under the plan's limit instead of discovering it through 429s, and a 429's `Retry-After` pauses every sender at
once through :meth:`TokenBudget.penalize`.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable
from contextlib import asynccontextmanager
from typing import Protocol, runtime_checkable

__all__ = ["FairTurns", "LocalTokenBucket", "TokenBudget"]

_EPSILON = 1e-9


@runtime_checkable
class TokenBudget(Protocol):
    """What :class:`~xnovu.novu.client.NovuClient` needs from a rate limiter; one may serve many clients."""

    async def acquire(self, cost: int) -> None:
        """Wait until `cost` tokens can be spent, then spend them. The budgets of this package also take a `key`
        (the notification a request belongs to): waiters take turns across keys (:class:`FairTurns`)."""
        ...

    def penalize(self, seconds: float) -> None:
        """Hold back every acquisition for `seconds` (Novu answered 429 with this Retry-After)."""
        ...

    def snapshot(self) -> dict[str, float]:
        """`rate_per_s`, `capacity`, `available` and `consumed_total`, for /status."""
        ...


class FairTurns:
    """Whose turn it is to wait for tokens: one waiter at a time holds the turn (and may sleep holding it, so a bulk
    request waiting for 100 tokens is not starved by a stream of 1-token singles), and the turn passes round-robin
    across keys, first come first served within a key (docs/priority.md "Claims": one notification with very many
    recipients has many requests waiting, and each other notification's request gets the next turn but one).
    Waiters without a key share one key: with no keys, this is a FIFO lock."""

    def __init__(self) -> None:
        self._held = False
        self._waiting: dict[Hashable, deque[asyncio.Future[None]]] = {}
        self._order: deque[Hashable] = deque()

    @asynccontextmanager
    async def turn(self, key: Hashable | None = None) -> AsyncIterator[None]:
        if self._held or self._order:
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            queue = self._waiting.get(key)
            if queue is None:
                queue = self._waiting[key] = deque()
                self._order.append(key)
            queue.append(future)
            try:
                await future
            except asyncio.CancelledError:
                if future.done() and not future.cancelled():
                    self._release()  # the turn came just as this waiter was cancelled: pass it on
                else:
                    self._forget(key, future)
                raise
        else:
            self._held = True
        try:
            yield
        finally:
            self._release()

    def _forget(self, key: Hashable | None, future: asyncio.Future[None]) -> None:
        queue = self._waiting.get(key)
        if queue is not None and future in queue:
            queue.remove(future)
            if not queue:
                del self._waiting[key]
                self._order.remove(key)

    def _release(self) -> None:
        """Hand the turn to the first waiter of the next key (that key goes to the back), or free it."""
        while self._order:
            key = self._order.popleft()
            queue = self._waiting[key]
            future = queue.popleft()
            if queue:
                self._order.append(key)
            else:
                del self._waiting[key]
            if not future.done():
                future.set_result(None)
                return
        self._held = False


class LocalTokenBucket:
    """A token bucket for one process: refills continuously at `rate_per_s` up to `capacity`.

    Waiters take turns (:class:`FairTurns`: in arrival order within a key, round-robin across keys; the head waiter
    holds the turn while it sleeps), so a bulk request waiting for 100 tokens is not starved by a stream of 1-token
    singles, and one notification's many requests do not keep every other notification's waiting.
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
        self._turns = FairTurns()

    def __repr__(self) -> str:
        return f"LocalTokenBucket(rate_per_s={self._rate:g}, capacity={self._capacity:g})"

    def _refill(self) -> float:
        now = self._clock()
        if now > self._last:
            self._available = min(self._capacity, self._available + (now - self._last) * self._rate)
            self._last = now
        return now

    async def acquire(self, cost: int, key: Hashable | None = None) -> None:
        """Wait (FIFO within `key`, round-robin across keys) until `cost` tokens are available and no penalty is
        running, then spend them.

        A cost above the capacity is clamped to the capacity (waits for a full bucket and drains it) rather
        than waiting forever.
        """
        if cost <= 0:
            return
        need = min(float(cost), self._capacity)
        async with self._turns.turn(key):
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
