"""Which due rows a claim takes: urgency first, then a weighted fair share across enterprises (docs/priority.md).

Pure: no I/O, no clock. The repository reads what is in flight and a bounded set of due candidates under the claim
lock, asks `select` which ids to claim, and compare-and-sets those.

The rules, in order:

- **Cost.** A row costs the Novu tokens its recipients not yet acknowledged will take (about one per recipient),
  but at most `ClaimLimits.row_cap` (half the token window): a notification bigger than the window never holds all
  of it, so other rows are claimed beside it. It still sends at the full rate when nothing else wants the budget:
  the window bounds what is claimed, the shared token budget what is sent.
- **Classes.** Urgent rows (urgency > 0) and the rest are admitted against separate windows of `ClaimLimits`
  each: normal work in flight never keeps an urgent row waiting, and urgent work never takes the normal window.
- **Shares.** A share is an enterprise's (rows without one form one) in one lane (new work, or its retries and
  recoveries, claimed by the failed poll) across every level of a class: spreading rows over levels gives an
  enterprise no more than its share, and its less urgent rows never count as a group with nothing in flight.
- **Order.** Levels of urgency from the highest down. Within a level, rows interleave by weighted fair queueing
  across shares: the next row is the one whose share would have the fewest tokens in flight per unit of weight
  after taking it; within a share, due order, never overtaken.
- **Admission.** A row is admitted when its class's in-flight rows and tokens stay within the window (the plain
  window, first come in the order above), or when its share stays within its weighted part of the window in both
  rows and tokens (or has nothing in flight) and the class within twice the window (the fair-share headroom: a
  share the others crowd out of the window still gets its part; a share alone has the whole window, so it never
  goes beyond the window). A share whose next row is refused takes no further row in this claim, at this level or
  a lower one: its less urgent rows never overtake its more urgent ones.
- **Progress (I7).** When nothing live of a class is in flight, its first row in order is admitted whatever it
  costs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime

from xnovu.core.weights import weight_of

#: Groups: (urgency level, enterprise id or None, retry lane): rows of one group keep their due order.
GroupKey = tuple[int, str | None, bool]
#: Shares: (urgent class, enterprise id or None, retry lane): what the window is shared among, across levels.
ShareKey = tuple[bool, str | None, bool]


@dataclass(frozen=True)
class ClaimLimits:
    """How much the deployment may have claimed and unfinished at once, per class (back-pressure on the polls).

    A poll that claims more than Novu's token budget can send only makes rows wait, claimed, for their turn;
    bounded claims keep the backlog in the table, in order, where every row is attempted when it can be sent.
    """

    max_rows: int
    """Rows in flight across the deployment (PROCESSING), per class (urgent, the rest)."""
    max_tokens: int
    """Novu tokens those rows will cost (about one per recipient): the budget of a few seconds of sending."""
    rows_per_slot: int = 0
    """With it, rows in flight per class are also at most this many per workflow task slot of the workers serving
    the task queue (`for_fleet`): children beyond the slots would wait on Temporal's task queue, first come first
    served (docs/priority.md "Temporal's task queue"). 0: `max_rows` alone."""
    own_slots: int = 0
    """The claiming worker's own slots: the fleet is never counted smaller (its row not written yet, or gone)."""

    def for_fleet(self, fleet_slots: int) -> ClaimLimits:
        """The limits of one claim, given the slots of the workers seen lately on the task queue (migration 0017):
        `max_rows` at most `rows_per_slot` per slot of the fleet, or of this worker alone when it counts more."""
        if self.rows_per_slot <= 0:
            return self
        slots = max(self.own_slots, fleet_slots)
        return replace(self, max_rows=min(self.max_rows, self.rows_per_slot * slots), rows_per_slot=0, own_slots=0)

    @property
    def row_cap(self) -> int:
        """The most one row counts against the token window: half of it (a big notification interleaves)."""
        return max(1, self.max_tokens // 2)

    def cost(self, tokens: int) -> int:
        """What a row whose recipients will cost `tokens` counts against the window."""
        return max(1, min(int(tokens), self.row_cap))


@dataclass(frozen=True)
class InFlight:
    """Live claims of one group: rows and the tokens they still count."""

    level: int
    enterprise: str | None
    retry: bool
    rows: int
    tokens: int

    @property
    def share(self) -> ShareKey:
        return (self.level > 0, self.enterprise, self.retry)


@dataclass(frozen=True)
class Candidate:
    """A due row a claim may take."""

    id: int
    level: int
    enterprise: str | None
    due: datetime | None
    """When it became due (None: due since ever, e.g. a legacy retry)."""
    tokens: int
    retry: bool = False
    """Read by the failed poll (a retry or a recovery)."""

    @property
    def group(self) -> GroupKey:
        return (self.level, self.enterprise, self.retry)

    @property
    def share(self) -> ShareKey:
        return (self.level > 0, self.enterprise, self.retry)


@dataclass
class _Use:
    rows: int = 0
    tokens: int = 0


@dataclass
class _Class:
    used: _Use = field(default_factory=_Use)
    live: bool = False
    """Something of this class is live in flight (or was admitted in this claim)."""
    weight: float = 0.0
    """The weights of its active shares, summed."""


def select(
    candidates: Iterable[Candidate],
    in_flight: Iterable[InFlight],
    limits: ClaimLimits,
    *,
    batch_size: int,
    weights: Mapping[str, float] | None = None,
) -> list[int]:
    """The ids to claim, in claim order (see the module's rules)."""
    weights = weights or {}
    queues: dict[GroupKey, list[Candidate]] = {}
    seen: set[int] = set()
    for c in candidates:
        if c.id not in seen:
            seen.add(c.id)
            queues.setdefault(c.group, []).append(c)
    for queue in queues.values():
        queue.sort(key=_due_order)
    share_use: dict[ShareKey, _Use] = {}
    classes = {True: _Class(), False: _Class()}
    for f in in_flight:
        use = share_use.setdefault(f.share, _Use())
        use.rows += f.rows
        use.tokens += f.tokens
        cls = classes[f.level > 0]
        cls.used.rows += f.rows
        cls.used.tokens += f.tokens
        cls.live = cls.live or f.rows > 0
    active = set(share_use) | {q[0].share for q in queues.values()}
    share_weight = {s: weight_of(weights, s[1]) for s in active}
    for s in active:
        classes[s[0]].weight += share_weight[s]

    chosen: list[int] = []
    refused: set[ShareKey] = set()
    for level in sorted({g[0] for g in queues}, reverse=True):
        cls = classes[level > 0]
        heads = {g: q for g, q in queues.items() if g[0] == level and q[0].share not in refused}
        while heads and len(chosen) < batch_size:
            g = min(heads, key=lambda k: _finish(heads[k][0], share_use, share_weight, limits))
            row = heads[g][0]
            use = share_use.setdefault(row.share, _Use())
            cost = limits.cost(row.tokens)
            if _admit(cls, use, cost, limits, share_weight[row.share] / cls.weight if cls.weight else 1.0):
                chosen.append(row.id)
                use.rows += 1
                use.tokens += cost
                cls.used.rows += 1
                cls.used.tokens += cost
                cls.live = True
                heads[g].pop(0)
                if not heads[g]:
                    del heads[g]
            else:  # due order within a share, more urgent first: nothing of it overtakes the refused row
                refused.add(row.share)
                del heads[g]
    return chosen


def has_room(
    in_flight: Iterable[InFlight], chosen: Iterable[Candidate], limits: ClaimLimits, *, urgent: bool
) -> bool:
    """Whether the class (urgent rows, or the rest) could still take a one-token row after `chosen` are claimed
    beside `in_flight`, within its plain window (the fair-share headroom may admit more; this errs on the side of
    no)."""
    rows = tokens = 0
    for f in in_flight:
        if (f.level > 0) == urgent:
            rows += f.rows
            tokens += f.tokens
    for c in chosen:
        if (c.level > 0) == urgent:
            rows += 1
            tokens += limits.cost(c.tokens)
    return rows + 1 <= limits.max_rows and tokens + 1 <= limits.max_tokens


def _due_order(c: Candidate) -> tuple[bool, datetime | float, int]:
    return (c.due is not None, c.due if c.due is not None else 0.0, c.id)


def _finish(
    row: Candidate, use: Mapping[ShareKey, _Use], weight: Mapping[ShareKey, float], limits: ClaimLimits
) -> tuple[float, bool, datetime | float, int]:
    u = use.get(row.share)
    tokens = (u.tokens if u else 0) + limits.cost(row.tokens)
    return (tokens / weight[row.share], *_due_order(row))


def _admit(cls: _Class, use: _Use, cost: int, limits: ClaimLimits, share: float) -> bool:
    if not cls.live:
        return True  # I7: nothing of the class in flight, the first row goes whatever it costs
    rows, tokens = cls.used.rows + 1, cls.used.tokens + cost
    if rows <= limits.max_rows and tokens <= limits.max_tokens:
        return True
    within_share = use.rows == 0 or (
        use.rows + 1 <= share * limits.max_rows and use.tokens + cost <= share * limits.max_tokens
    )
    return within_share and rows <= 2 * limits.max_rows and tokens <= 2 * limits.max_tokens
