"""The live fleet in the database (migration 0017): which workers serve a task queue, with how many workflow task slots.

Claims cap the rows in flight of each class at a few rows per slot (docs/priority.md "Temporal's task queue"), and
the rows they count are the deployment's, whoever claimed them; so the slots are the deployment's too: those of the
workers seen within `seen_within_s()` on the claim's namespace and task queue (`claim_flight`'s `fleet_slots`).
Each worker writes its row when it starts, refreshes it every `HEARTBEAT_EVERY_S` and deletes it when it stops
(xnovu/worker/fleet.py). Every time is the database's clock, never a worker's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import asyncpg

from xnovu.db.queries import q

#: How often a worker refreshes its row.
HEARTBEAT_EVERY_S = 5.0
#: A worker counts while seen within this many heartbeats: one late heartbeat (a busy event loop, a slow database)
#: does not shrink the window, and a dead worker's slots stop counting within 15 s.
SEEN_WITHIN_BEATS = 3
#: The rows of workers not seen for this long are deleted by the others' heartbeats, at most `PRUNE_BATCH` per
#: heartbeat: the table holds the live workers and those gone in the last minutes (what /status counts as unseen).
FORGET_AFTER_S = 600.0
PRUNE_BATCH = 1_000


def seen_within_s() -> float:
    """The horizon within which a worker's slots count (read at each call, so a test may shorten the heartbeat)."""
    return HEARTBEAT_EVERY_S * SEEN_WITHIN_BEATS


@dataclass(frozen=True)
class FleetScope:
    """The workers whose slots a claim counts: those of one Temporal namespace and task queue (the queue the polls
    start their children on). Another deployment sharing the database on another queue does not count."""

    namespace: str
    task_queue: str


@dataclass(frozen=True)
class FleetMember:
    """One worker's row."""

    id: str
    scope: FleetScope
    workflow_slots: int
    enterprise_id: str | None
    wakeups: bool
    version: str


async def beat(pool: asyncpg.Pool, member: FleetMember, *, timeout_s: float | None = None) -> int:
    """Write or refresh this worker's row; returns how many rows of long-gone workers it deleted."""
    row = await pool.fetchrow(
        q("fleet_beat"),
        member.id,
        member.scope.namespace,
        member.scope.task_queue,
        member.workflow_slots,
        member.enterprise_id,
        member.wakeups,
        member.version,
        FORGET_AFTER_S * 1000,
        PRUNE_BATCH,
        timeout=timeout_s,
    )
    return int(row["pruned"]) if row else 0


async def leave(pool: asyncpg.Pool, member_id: str, *, timeout_s: float | None = None) -> None:
    """Delete this worker's row: its slots stop counting at once."""
    await pool.execute(q("fleet_leave"), member_id, timeout=timeout_s)


async def fleet_status(pool: asyncpg.Pool, scope: FleetScope) -> dict[str, Any]:
    """The workers seen on `scope` and their slots, and the rows of unseen workers not yet pruned."""
    row = await pool.fetchrow(q("fleet_status"), scope.namespace, scope.task_queue, seen_within_s() * 1000)
    assert row is not None
    return {"workers": int(row["workers"]), "workflow_slots": int(row["slots"]), "unseen": int(row["unseen"])}
