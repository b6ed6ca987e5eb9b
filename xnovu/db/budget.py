"""The deployment-wide Novu token budget: every worker process draws from one Postgres row.

Novu's rate limit is per environment, not per worker, so N replicas must share NOVU_RATE_LIMIT_RPS. Each process
leases small batches of tokens (about 100 ms worth) from the row, so a busy worker makes ~10 small UPDATEs a second
rather than one per request, and an idle one holds at most one lease. A 429 pushes the shared row negative, so every
worker waits out Retry-After, not just the one that saw it. Within a process the most urgent request is served
first, enterprises share by weight (weighted fair queueing) and the notifications of one enterprise round-robin
(xnovu/novu/fairqueue.py, docs/priority.md "The token budget").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Hashable, Mapping

import asyncpg

from xnovu.db.queries import q
from xnovu.novu.fairqueue import FairTurns

log = logging.getLogger(__name__)

#: The bucket of Novu's `events` category (every /v1/events/* route).
EVENTS_BUCKET = "novu-events"


class PostgresTokenBudget:
    """A :class:`~xnovu.novu.ratelimit.TokenBudget` shared by every worker through Postgres."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        rate_per_s: float,
        *,
        capacity: float | None = None,
        name: str = EVENTS_BUCKET,
        lease_s: float = 0.1,
        weights: Mapping[str, float] | None = None,
        fifo: bool = False,
    ) -> None:
        if not rate_per_s > 0:
            raise ValueError("rate_per_s must be positive")
        self._pool = pool
        self._rate = float(rate_per_s)
        # A bulk request costs 100 tokens: a smaller bucket could never afford one.
        self._capacity = max(self._rate, 100.0) if capacity is None else float(capacity)
        self._name = name
        self._lease = max(1.0, self._rate * lease_s)
        self._local = 0.0
        self._consumed = 0.0
        self._blocked_until = 0.0
        self._turns = FairTurns(weights)
        self._fifo = fifo
        """SEND_ORDER=oldest-first: every waiter in arrival order (the order before priority; a comparison mode)."""
        self._taking = asyncio.Lock()
        self._initialised = False
        self._tasks: set[asyncio.Task[None]] = set()

    async def _take(self, want: float) -> float:
        if not self._initialised:
            await self._pool.execute(q("budget_init"), self._name, self._capacity)
            self._initialised = True
        row = await self._pool.fetchrow(q("budget_take"), self._name, self._rate, self._capacity, want)
        if row is None:  # the row was deleted under us: recreate it next time
            self._initialised = False
            return 0.0
        return float(row["granted"])

    async def acquire(
        self, cost: int, *, urgency: int = 0, enterprise: str | None = None, notification: Hashable | None = None
    ) -> None:
        """Wait until `cost` tokens are granted, then spend them. Waiters of this process are served most urgent
        first, then enterprises by weighted fair queueing, then notification by notification (round robin), then in
        arrival order (xnovu/novu/fairqueue.py)."""
        if cost <= 0:
            return
        need = min(float(cost), self._capacity)
        if self._fifo:
            urgency, enterprise, notification = 0, None, None
        async with self._turns.turn(need, urgency, enterprise, notification) as turn:
            while True:
                await turn.until_head()
                wait = self._blocked_until - time.monotonic()
                if wait > 0:
                    await turn.pause(wait)
                    continue
                if self._local + 1e-9 >= need:
                    self._local = max(0.0, self._local - need)
                    self._consumed += cost
                    turn.served()
                    return
                async with self._taking:  # a head displaced mid-take finishes it; its tokens stay in this process
                    self._local += await self._take(max(need - self._local, self._lease))
                if self._local + 1e-9 < need:
                    await turn.pause(min(1.0, (need - self._local) / self._rate))

    def penalize(self, seconds: float) -> None:
        """Hold back this process now and every other worker through the shared row."""
        if seconds <= 0:
            return
        self._blocked_until = max(self._blocked_until, time.monotonic() + seconds)
        self._local = 0.0
        with contextlib.suppress(RuntimeError):  # no running loop: the local block still applies
            task = asyncio.get_running_loop().create_task(self._penalize_shared(seconds))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _penalize_shared(self, seconds: float) -> None:
        try:
            await self._pool.execute(q("budget_penalize"), self._name, self._rate, seconds)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning("could not share a Novu rate-limit penalty", extra={"error": type(exc).__name__})

    def snapshot(self) -> dict[str, float]:
        return {
            "rate_per_s": self._rate,
            "capacity": self._capacity,
            "available": round(self._local, 3),
            "consumed_total": self._consumed,
            "waiting": float(len(self._turns.queue)),
        }
