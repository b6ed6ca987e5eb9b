"""Who gets the next Novu tokens in this process: the most urgent waiter first; within an urgency, enterprises take
turns by tokens (deficit round robin, weighted by `FAIR_SHARE_WEIGHTS`); within an enterprise, first come first
served (docs/priority.md "The token budget").

Before, waiters queued FIFO behind one lock: an urgent row's request waited behind every request already queued
(about ten seconds of budget, what the claims keep in flight), and an enterprise with a big backlog queued ahead of
everyone else's requests took the whole budget until its queue drained.

:class:`FairQueue` is the pure order (no clock, no asyncio); :class:`FairTurns` lets coroutines wait their turn in it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections import deque
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field

#: Tokens an enterprise may take per turn at weight 1: one bulk request (the costliest request), so a turn is never
#: too small for any request, and another enterprise waits at most about one request's worth per enterprise ahead.
QUANTUM = 100.0
_EPSILON = 1e-9
#: Weights are clamped to Temporal's range for fairness weights: a turn is at least 0.1 token (a group of the
#: smallest weight alone needs at most 1 000 turns for a bulk request: `head` never spins long) and at most 100 000.
WEIGHT_MIN, WEIGHT_MAX = 0.001, 1000.0


def group_of(enterprise: str | None) -> str:
    """The group a request's enterprise belongs to: the same rule as xnovu/core/weights.py `group_of` (this layer
    does not import the core), so the keys of FAIR_SHARE_WEIGHTS match; rows without an enterprise are `none`."""
    return enterprise.lower() if enterprise else "none"


@dataclass(eq=False)
class Waiter:
    """One request waiting for `cost` tokens."""

    cost: float
    urgency: int
    group: str
    seq: int


@dataclass(eq=False)
class _Group:
    name: str
    weight: float
    waiters: deque[Waiter] = field(default_factory=deque)
    deficit: float = 0.0


@dataclass
class _Level:
    order: deque[_Group] = field(default_factory=deque)
    """Groups with waiters; the first one has the turn."""
    groups: dict[str, _Group] = field(default_factory=dict)


class FairQueue:
    """The order in which waiters are served (pure: deterministic, no clock)."""

    def __init__(self, weights: Mapping[str, float] | None = None, *, quantum: float = QUANTUM) -> None:
        self._weights = dict(weights or {})
        self._quantum = quantum
        self._levels: dict[int, _Level] = {}
        self._seq = itertools.count()
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def push(self, cost: float, urgency: int = 0, enterprise: str | None = None) -> Waiter:
        """A new waiter, last of its enterprise at its urgency."""
        name = group_of(enterprise)
        waiter = Waiter(float(cost), int(urgency), name, next(self._seq))
        level = self._levels.setdefault(waiter.urgency, _Level())
        group = level.groups.get(name)
        if group is None:
            weight = min(WEIGHT_MAX, max(WEIGHT_MIN, self._weights.get(name, 1.0)))
            group = level.groups[name] = _Group(name, weight)
            level.order.append(group)
            if len(level.order) == 1:
                group.deficit = self._quantum * group.weight  # it has the turn at once
        group.waiters.append(waiter)
        self._size += 1
        return waiter

    def head(self) -> Waiter | None:
        """The waiter served next. Calling it again without a push, served or remove returns the same waiter."""
        if not self._levels:
            return None
        level = self._levels[max(self._levels)]
        while True:
            group = level.order[0]
            first = group.waiters[0]
            if group.deficit + _EPSILON >= first.cost:
                return first
            # Its turn is used up: the next enterprise's turn begins (weights are positive, so this ends).
            level.order.rotate(-1)
            level.order[0].deficit += self._quantum * level.order[0].weight

    def served(self, waiter: Waiter) -> None:
        """`waiter` got its tokens: they count against its enterprise's turn."""
        group = self._drop(waiter)
        if group is not None:
            group.deficit -= waiter.cost

    def remove(self, waiter: Waiter) -> None:
        """`waiter` gave up (cancelled, or its deadline passed): it leaves without being charged."""
        self._drop(waiter)

    def _drop(self, waiter: Waiter) -> _Group | None:
        level = self._levels.get(waiter.urgency)
        group = level.groups.get(waiter.group) if level else None
        if level is None or group is None or waiter not in group.waiters:
            return None
        group.waiters.remove(waiter)
        self._size -= 1
        if not group.waiters:  # an enterprise with nothing waiting keeps no credit (deficit round robin)
            had_turn = level.order[0] is group
            level.order.remove(group)
            del level.groups[group.name]
            if not level.order:
                del self._levels[waiter.urgency]
            elif had_turn:
                level.order[0].deficit += self._quantum * level.order[0].weight
        return group

    def waiting(self) -> dict[int, int]:
        """Waiters by urgency (for /status)."""
        return {u: sum(len(g.waiters) for g in lv.order) for u, lv in sorted(self._levels.items(), reverse=True)}


class FairTurns:
    """Coroutines waiting for their turn in a :class:`FairQueue`.

    Usage: ``async with turns.turn(cost, urgency, enterprise) as t: ... await t.wait(seconds) ... t.served()``; only
    the head runs its body's loop, the others sleep until the head changes (a more urgent waiter arriving wakes the
    head it displaces, which goes back to waiting).
    """

    def __init__(self, weights: Mapping[str, float] | None = None) -> None:
        self.queue = FairQueue(weights)
        self._events: dict[Waiter, asyncio.Event] = {}
        self._head: Waiter | None = None

    def _nudge(self) -> None:
        """Wake the head if it changed, and the one it displaced."""
        head = self.queue.head()
        if head is self._head:
            return
        for w in (self._head, head):
            if w is not None and w in self._events:
                self._events[w].set()
        self._head = head

    @contextlib.asynccontextmanager
    async def turn(self, cost: float, urgency: int = 0, enterprise: str | None = None) -> AsyncIterator[_Turn]:
        waiter = self.queue.push(cost, urgency, enterprise)
        event = self._events[waiter] = asyncio.Event()
        turn = _Turn(self, waiter, event)
        self._nudge()
        try:
            yield turn
        finally:
            if not turn.done:
                self.queue.remove(waiter)
            del self._events[waiter]
            self._nudge()


class _Turn:
    def __init__(self, turns: FairTurns, waiter: Waiter, event: asyncio.Event) -> None:
        self._turns = turns
        self.waiter = waiter
        self._event = event
        self.done = False

    async def until_head(self) -> None:
        """Wait until this waiter is the one served next."""
        while self._turns.queue.head() is not self.waiter:
            await self._event.wait()
            self._event.clear()

    async def pause(self, seconds: float) -> None:
        """Sleep up to `seconds`, or less if the head changed meanwhile (then check `until_head` again)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._event.wait()
        self._event.clear()

    def served(self) -> None:
        self.done = True
        self._turns.queue.served(self.waiter)
