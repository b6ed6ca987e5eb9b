"""Who gets the next Novu tokens in this process: the most urgent waiter first; within an urgency, enterprises take
turns by tokens (deficit round robin, weighted by `FAIR_SHARE_WEIGHTS`); within an enterprise, notifications take
turns request by request (round robin); within a notification, first come first served (docs/priority.md "The token
budget").

Before, waiters queued FIFO behind one lock: an urgent row's request waited behind every request already queued
(about ten seconds of budget, what the claims keep in flight), an enterprise with a big backlog queued ahead of
everyone else's requests took the whole budget until its queue drained, and one notification of 50 000 recipients
(its bulk requests queued at once) held back the small rows of its own enterprise claimed beside it.

:class:`FairQueue` is the pure order (no clock, no asyncio); :class:`FairTurns` lets coroutines wait their turn in it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections import deque
from collections.abc import AsyncIterator, Hashable, Mapping
from dataclasses import dataclass, field

#: Tokens an enterprise may take per turn at weight 1: one bulk request (the costliest request), so a turn is never
#: too small for any request, and another enterprise waits at most about one request's worth per enterprise ahead.
QUANTUM = 100.0
_EPSILON = 1e-9
#: Temporal's range for fairness weights. FAIR_SHARE_WEIGHTS refuses values outside it (xnovu/core/weights.py); a
#: mapping given directly is clamped to it: a turn is at least 0.1 token (a group of the smallest weight alone needs at
#: most 1 000 turns for a bulk request: `head` never spins long) and at most 100 000.
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
    notification: Hashable | None = None
    """The notification the request belongs to (None: waiters without one share one turn)."""


@dataclass(eq=False)
class _Group:
    """An enterprise at one urgency: its waiters by notification, the notifications in turn order."""

    name: str
    weight: float
    notifications: dict[Hashable | None, deque[Waiter]] = field(default_factory=dict)
    order: deque[Hashable | None] = field(default_factory=deque)
    """Notifications with waiters; the first one's first waiter is the enterprise's next."""
    deficit: float = 0.0

    def first(self) -> Waiter:
        return self.notifications[self.order[0]][0]

    def add(self, waiter: Waiter) -> None:
        queue = self.notifications.get(waiter.notification)
        if queue is None:
            queue = self.notifications[waiter.notification] = deque()
            self.order.append(waiter.notification)
        queue.append(waiter)

    def drop(self, waiter: Waiter, *, served: bool) -> bool:
        """Take `waiter` out (False if it is not here); when it was served, its notification goes to the back."""
        queue = self.notifications.get(waiter.notification)
        if queue is None or waiter not in queue:
            return False
        was_first = queue[0] is waiter and self.order[0] == waiter.notification
        queue.remove(waiter)
        if not queue:
            del self.notifications[waiter.notification]
            self.order.remove(waiter.notification)
        elif was_first and served:
            self.order.rotate(-1)  # round robin: the next notification's request is next
        return True

    def __bool__(self) -> bool:
        return bool(self.order)


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

    def push(
        self, cost: float, urgency: int = 0, enterprise: str | None = None, notification: Hashable | None = None
    ) -> Waiter:
        """A new waiter, last of its notification (a new notification last in its enterprise's turn order) at its
        urgency."""
        name = group_of(enterprise)
        waiter = Waiter(float(cost), int(urgency), name, next(self._seq), notification)
        level = self._levels.setdefault(waiter.urgency, _Level())
        group = level.groups.get(name)
        if group is None:
            weight = min(WEIGHT_MAX, max(WEIGHT_MIN, self._weights.get(name, 1.0)))
            group = level.groups[name] = _Group(name, weight)
            level.order.append(group)
            if len(level.order) == 1:
                group.deficit = self._quantum * group.weight  # it has the turn at once
        group.add(waiter)
        self._size += 1
        return waiter

    def head(self) -> Waiter | None:
        """The waiter served next. Calling it again without a push, served or remove returns the same waiter."""
        if not self._levels:
            return None
        level = self._levels[max(self._levels)]
        while True:
            group = level.order[0]
            first = group.first()
            if group.deficit + _EPSILON >= first.cost:
                return first
            # Its turn is used up: the next enterprise's turn begins (weights are positive, so this ends).
            level.order.rotate(-1)
            level.order[0].deficit += self._quantum * level.order[0].weight

    def served(self, waiter: Waiter) -> None:
        """`waiter` got its tokens: they count against its enterprise's turn."""
        group = self._drop(waiter, served=True)
        if group is not None:
            group.deficit -= waiter.cost

    def remove(self, waiter: Waiter) -> None:
        """`waiter` gave up (cancelled, or its deadline passed): it leaves without being charged."""
        self._drop(waiter, served=False)

    def _drop(self, waiter: Waiter, *, served: bool) -> _Group | None:
        level = self._levels.get(waiter.urgency)
        group = level.groups.get(waiter.group) if level else None
        if level is None or group is None or not group.drop(waiter, served=served):
            return None
        self._size -= 1
        if not group:  # an enterprise with nothing waiting keeps no credit (deficit round robin)
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
        return {
            u: sum(len(q) for g in lv.order for q in g.notifications.values())
            for u, lv in sorted(self._levels.items(), reverse=True)
        }


class FairTurns:
    """Coroutines waiting for their turn in a :class:`FairQueue`.

    Usage: ``async with turns.turn(cost, urgency, enterprise, notification) as t: ... await t.until_head() ...
    await t.pause(seconds) ... t.served()``; only the head runs its body's loop, the others sleep until the head
    changes (a more urgent waiter arriving wakes the head it displaces, which goes back to waiting). The head keeps
    its place while it sleeps for tokens, so a bulk request waiting for 100 tokens is not starved by a stream of
    1-token singles; a waiter that leaves without `served` (cancelled, deadline) is not charged and passes the turn.
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
    async def turn(
        self, cost: float, urgency: int = 0, enterprise: str | None = None, notification: Hashable | None = None
    ) -> AsyncIterator[_Turn]:
        waiter = self.queue.push(cost, urgency, enterprise, notification)
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
