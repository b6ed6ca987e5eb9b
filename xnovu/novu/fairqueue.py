"""Who gets the next Novu tokens in this process: the most urgent waiter first; within an urgency, enterprises share
the tokens by weighted fair queueing (`FAIR_SHARE_WEIGHTS`); within an enterprise, notifications take turns request
by request (round robin); within a notification, first come first served (docs/priority.md "The token budget").

Before, waiters queued FIFO behind one lock: an urgent row's request waited behind every request already queued
(about ten seconds of budget, what the claims keep in flight), an enterprise with a big backlog queued ahead of
everyone else's requests took the whole budget until its queue drained, and one notification of 50 000 recipients
(its bulk requests queued at once) held back the small rows of its own enterprise claimed beside it.

Enterprises are served by virtual finish times, as the claims interleave them (xnovu/core/fairshare.py): each
enterprise with waiters at an urgency has a virtual start, where its next request begins, and that request finishes
at start + cost / weight; the waiter with the earliest finish is served next, and its enterprise's next request
starts where it finished. An enterprise that starts waiting starts at the level's virtual time (the start of the
request served last), or where its last request finished if that is later: it gets no credit for the time it had
nothing waiting, and asking one request at a time does not reset what it took. Each enterprise so gets its weight's
share of the tokens whatever its requests cost, and waits for the others' shares of its own request only: at
weights 1000 and 1, a 1-token request waits behind about 1 000 tokens of the heavy enterprise, where turns of
100 x weight tokens (the deficit round robin this replaced) kept it waiting 100 000 (28 minutes at 60 tokens/s).

:class:`FairQueue` is the pure order (no clock, no asyncio); :class:`FairTurns` lets coroutines wait their turn in it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections import deque
from collections.abc import AsyncIterator, Hashable, Mapping
from dataclasses import dataclass, field

#: Tokens of the costliest request: one bulk request. Besides its weight's share, a request may wait for about one
#: such request of each other enterprise (the one being granted, or one whose finish ties with its own).
LARGEST_REQUEST = 100.0
#: Temporal's range for fairness weights. FAIR_SHARE_WEIGHTS refuses values outside it (xnovu/core/weights.py); a
#: mapping given directly is clamped to it.
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
    start: float
    """Virtual time at which its next request starts."""
    notifications: dict[Hashable | None, deque[Waiter]] = field(default_factory=dict)
    order: deque[Hashable | None] = field(default_factory=deque)
    """Notifications with waiters; the first one's first waiter is the enterprise's next."""

    def first(self) -> Waiter:
        return self.notifications[self.order[0]][0]

    def finish(self, waiter: Waiter) -> float:
        """Virtual time at which `waiter` would finish if it were served next."""
        return self.start + waiter.cost / self.weight

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
    groups: dict[str, _Group] = field(default_factory=dict)
    """Enterprises with waiters at this urgency."""
    vtime: float = 0.0
    """Virtual time: the start of the request served last."""
    finished: dict[str, float] = field(default_factory=dict)
    """Where the last request of enterprises with nothing waiting finished, while that is ahead of `vtime`."""

    def prune(self) -> None:
        """Forget finishes `vtime` has caught up with (a returning enterprise starts at `vtime` anyway)."""
        if len(self.finished) > 2 * len(self.groups) + 16:
            self.finished = {name: f for name, f in self.finished.items() if f > self.vtime}


class FairQueue:
    """The order in which waiters are served (pure: deterministic, no clock)."""

    def __init__(self, weights: Mapping[str, float] | None = None) -> None:
        self._weights = dict(weights or {})
        self._levels: dict[int, _Level] = {}
        self._seq = itertools.count()
        self._size = 0
        self._head: Waiter | None = None
        self._head_known = True

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
            start = max(level.vtime, level.finished.pop(name, level.vtime))
            group = level.groups[name] = _Group(name, weight, start)
        group.add(waiter)
        self._size += 1
        self._head_known = False
        return waiter

    def head(self) -> Waiter | None:
        """The waiter served next. Calling it again without a push, served or remove returns the same waiter."""
        if not self._head_known:
            self._head = self._pick()
            self._head_known = True
        return self._head

    def _pick(self) -> Waiter | None:
        if not self._levels:
            return None
        level = self._levels[max(self._levels)]
        # Earliest finish; then the earlier start (the enterprise that has waited longer in virtual time); then
        # arrival.
        group = min(level.groups.values(), key=lambda g: (g.finish(g.first()), g.start, g.first().seq))
        return group.first()

    def served(self, waiter: Waiter) -> None:
        """`waiter` got its tokens: its enterprise's next request starts where this one finished."""
        level = self._levels.get(waiter.urgency)
        group = level.groups.get(waiter.group) if level else None
        if level is None or group is None:
            return
        start, finish = group.start, group.finish(waiter)
        if self._drop(waiter, served=True) is None:
            return
        level.vtime = max(level.vtime, start)
        group.start = finish
        if not group and waiter.urgency in self._levels:
            level.finished[group.name] = finish
            level.prune()

    def remove(self, waiter: Waiter) -> None:
        """`waiter` gave up (cancelled, or its deadline passed): it leaves without being charged."""
        level = self._levels.get(waiter.urgency)
        group = self._drop(waiter, served=False)
        if level is not None and group is not None and not group and waiter.urgency in self._levels:
            level.finished[group.name] = group.start
            level.prune()

    def _drop(self, waiter: Waiter, *, served: bool) -> _Group | None:
        level = self._levels.get(waiter.urgency)
        group = level.groups.get(waiter.group) if level else None
        if level is None or group is None or not group.drop(waiter, served=served):
            return None
        self._size -= 1
        self._head_known = False
        if not group:
            del level.groups[group.name]
            if not level.groups:  # nobody waits at this urgency: nobody is owed anything either
                del self._levels[waiter.urgency]
        return group

    def waiting(self) -> dict[int, int]:
        """Waiters by urgency (for /status)."""
        return {
            u: sum(len(q) for g in lv.groups.values() for q in g.notifications.values())
            for u, lv in sorted(self._levels.items(), reverse=True)
        }


class FairTurns:
    """Coroutines waiting for their turn in a :class:`FairQueue`.

    Usage: ``async with turns.turn(cost, urgency, enterprise, notification) as t: ... await t.until_head() ...
    await t.pause(seconds) ... t.served()``; only the head runs its body's loop, the others sleep until the head
    changes (a waiter arriving with an earlier finish, more urgent or of an enterprise below its share, wakes the
    head it displaces, which goes back to waiting). The head keeps its place while it sleeps for tokens against
    everything that would finish later, so a bulk request waiting for 100 tokens is not starved by a stream of
    1-token singles: another enterprise's singles overtake it only up to that enterprise's share, its own
    enterprise's not at all. A waiter that leaves without `served` (cancelled, deadline) is not charged and passes
    the turn.
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
