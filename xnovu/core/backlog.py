"""The due backlog as operators see it (docs/priority.md "Operating it"): by urgency and by enterprise, with a bounded
number of enterprises (the top ones by backlog, the rest as "other") so /metrics keeps a bounded label set however
many enterprises share the table. Pure: the rows come from queries.sql `due_backlog`."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from xnovu.core.weights import group_of

#: Enterprises shown by name; the others are summed as OTHER.
TOP_ENTERPRISES = 10
#: Urgency levels shown by value (the most urgent ones); the others are summed as OTHER.
TOP_URGENCIES = 10
OTHER = "other"
#: Rows the backlog sample reads at most per part (queries.sql `due_backlog`).
SAMPLE_ROWS = 10_000


@dataclass
class Due:
    """Due rows of one group and how long the oldest has been due."""

    due: int = 0
    oldest_s: float = 0.0

    def add(self, n: int, oldest_s: float) -> None:
        self.due += n
        self.oldest_s = max(self.oldest_s, oldest_s)

    def as_dict(self) -> dict[str, float]:
        return {"due": self.due, "oldest_s": round(self.oldest_s, 3)}


@dataclass
class Backlog:
    by_urgency: dict[str, Due] = field(default_factory=dict)
    by_enterprise: dict[str, Due] = field(default_factory=dict)
    highest_urgency: int | None = None
    """The highest urgency above normal with due rows (None: no urgent row is due)."""
    urgent_oldest_s: float = 0.0
    """How long the oldest due row of `highest_urgency` has been due (0 when none): what the alert watches."""
    capped: bool = False
    """The sample stopped at its bound: counts are those of the oldest rows read; ages stay exact."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "by_urgency": {k: v.as_dict() for k, v in self.by_urgency.items()},
            "by_enterprise": {k: v.as_dict() for k, v in self.by_enterprise.items()},
            "highest_urgency": self.highest_urgency,
            "urgent_oldest_s": round(self.urgent_oldest_s, 3),
            "capped": self.capped,
        }


def summarize(
    rows: Iterable[Mapping[str, Any]], *, top_enterprises: int = TOP_ENTERPRISES, top_urgencies: int = TOP_URGENCIES
) -> Backlog:
    """Rows of (urgency, enterprise_id, n, oldest_s, capped) → the backlog by urgency and by enterprise."""
    rows = list(rows)
    out = Backlog(capped=any(bool(r["capped"]) for r in rows))
    urgencies: dict[int, Due] = {}
    enterprises: dict[str, Due] = {}
    for r in rows:
        urgencies.setdefault(int(r["urgency"]), Due()).add(int(r["n"]), float(r["oldest_s"]))
        enterprises.setdefault(group_of(r["enterprise_id"]), Due()).add(int(r["n"]), float(r["oldest_s"]))
    levels = sorted(urgencies, reverse=True)
    for level in levels[:top_urgencies]:
        out.by_urgency[str(level)] = urgencies[level]
    for level in levels[top_urgencies:]:
        out.by_urgency.setdefault(OTHER, Due()).add(urgencies[level].due, urgencies[level].oldest_s)
    ranked = sorted(enterprises, key=lambda e: (-enterprises[e].due, -enterprises[e].oldest_s, e))
    for name in ranked[:top_enterprises]:
        out.by_enterprise[name] = enterprises[name]
    for name in ranked[top_enterprises:]:
        out.by_enterprise.setdefault(OTHER, Due()).add(enterprises[name].due, enterprises[name].oldest_s)
    if levels and levels[0] > 0:
        out.highest_urgency = levels[0]
        out.urgent_oldest_s = urgencies[levels[0]].oldest_s
    return out
