"""Retention: prune xnovu's own records of notifications that ended long ago, in short batches (docs/retention.md).

A notification has ended when it is SENT, RETRACTED, or FAILED and dead-lettered (docs/design.md "Lifecycle"); the
prune removes what xnovu keeps about it once it ended more than RETENTION_DAYS ago, pass after pass:

1. its delivery ledger (`ent_notification_delivery`): the ended notifications are walked in the order they last
   changed, from where the last batch stopped (`xnovu_retention_state`), through an index of ended rows, so a run
   reads only what ended since the last one;
2. rule fires older than the cutoff, except each rule's latest (`xnovu_rule_fire`);
3. token-budget buckets nobody used since the cutoff (`xnovu_rate_budget`);
4. only when asked, the notifications themselves (`ent_notification`), after a window of their own;
5. its own records older than the cutoff (`xnovu_prune_run`).

Every batch is one short transaction that locks only the rows it deletes (and, for a moment, the dead-lettered rows
whose ledger it deletes, against a concurrent `dlq requeue`), followed by a pause as long as the batch took, so the
prune never uses more than half of one connection and claims and inserts go on at their pace. One prune runs at a
time: a lease row that each batch renews, not an advisory lock (a session lock is lost behind a transaction pooler,
and a transaction held open for the run would hold back every vacuum of the tables being pruned).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

import asyncpg

from xnovu.config import Settings
from xnovu.db.queries import q
from xnovu.errors import DatabaseError, XnovuError

log = logging.getLogger(__name__)

#: Ledger rows (or rule fires) one batch deletes at most: a few tens of milliseconds of work.
BATCH_ROWS = 5_000
#: Ended notifications one batch considers at most (and notifications one batch deletes, when asked).
CANDIDATES = 500
#: A run that stopped heartbeating this long ago (its worker died) leaves its lease to the next prune.
LEASE_S = 300.0

#: A dry run counts every row it would remove (a first prune of years of history: millions), beyond the pool's
#: default per-statement timeout.
PREVIEW_TIMEOUT_S = 3600.0

#: The tables /status shows the size of: the notifications and everything xnovu keeps beside them.
TABLES = (
    "ent_notification",
    "ent_notification_delivery",
    "xnovu_rule_fire",
    "xnovu_rule_sync",
    "xnovu_rate_budget",
    "xnovu_prune_run",
    "xnovu_retention_state",
    "xnovu_schema_migrations",
    "xnovu_wakeup_switch",
    "xnovu_priority_order",
    "xnovu_worker",
)


class PruneBusyError(XnovuError):
    """Another prune holds the lease."""


@dataclass(frozen=True)
class RetentionPolicy:
    """How much a prune keeps, and how it paces itself."""

    days: int
    """RETENTION_DAYS: xnovu's records of a notification that ended longer ago than this are pruned."""
    notification_days: int | None = None
    """Delete the notifications that ended longer ago than this too; None keeps them."""
    batch_rows: int = BATCH_ROWS
    candidates: int = CANDIDATES
    pause_ratio: float = 1.0
    """After each batch, pause this many times as long as it took (1.0: at most half of one connection's time)."""
    lease_s: float = LEASE_S

    @classmethod
    def from_settings(cls, settings: Settings, *, notifications: bool | None = None) -> RetentionPolicy:
        """RETENTION_DAYS, and the notifications' window: RETENTION_NOTIFICATION_DAYS (None: as configured, what the
        Schedule does), or on request (`xnovu db prune --notifications`: that setting, else RETENTION_DAYS), or
        never (False)."""
        if notifications is None:
            days = settings.retention_notification_days
        elif notifications:
            days = settings.retention_notification_days or settings.retention_days
        else:
            days = None
        return cls(days=settings.retention_days, notification_days=days)


@dataclass(frozen=True)
class PruneRun:
    """One prune, as `notify.xnovu_prune_run` records it."""

    id: int
    source: str
    started_at: datetime
    finished_at: datetime | None
    cutoff: datetime
    notification_cutoff: datetime | None
    deliveries: int
    rule_fires: int
    budget_rows: int
    notifications: int
    prune_runs: int
    batches: int
    longest_batch_ms: int
    error: str | None

    @property
    def rows(self) -> int:
        """Every row the run removed, all tables together."""
        return self.deliveries + self.rule_fires + self.budget_rows + self.notifications + self.prune_runs

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for key, value in out.items():
            if isinstance(value, datetime):
                out[key] = value.isoformat()
        out["rows"] = self.rows
        return out


@dataclass(frozen=True)
class PrunePreview:
    """What a prune begun now would remove (`xnovu db prune --dry-run`)."""

    cutoff: datetime
    notification_cutoff: datetime | None
    deliveries: int
    ledger_notifications: int
    """Ended notifications whose ledger rows those are."""
    rule_fires: int
    budget_rows: int
    notifications: int | None
    """None when notifications are not to be deleted."""
    prune_runs: int

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for key, value in out.items():
            if isinstance(value, datetime):
                out[key] = value.isoformat()
        return out


def _run(row: asyncpg.Record) -> PruneRun:
    return PruneRun(**{k: row[k] for k in PruneRun.__dataclass_fields__})


@dataclass
class _Batch:
    """What one batch removed, and whether its pass has more."""

    more: bool
    deliveries: int = 0
    rule_fires: int = 0
    budget_rows: int = 0
    notifications: int = 0
    prune_runs: int = 0


Batch = Callable[[asyncpg.Connection, PruneRun], Awaitable[_Batch]]


class Pruner:
    """Prunes in batches on a pool (the worker's, or the command's own)."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        policy: RetentionPolicy,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.pool = pool
        self.policy = policy
        self._sleep = sleep

    async def preview(self) -> PrunePreview:
        """Count what a prune begun now would remove; removes nothing, records nothing."""
        p = self.policy
        cut = await self.pool.fetchrow(q("retention_cutoffs"), p.days, p.notification_days)
        assert cut is not None
        row = await self.pool.fetchrow(
            q("retention_preview"),
            cut["cutoff"],
            cut["notification_cutoff"],
            cut["after_updated_at"],
            cut["after_id"],
            timeout=PREVIEW_TIMEOUT_S,
        )
        assert row is not None
        return PrunePreview(
            cutoff=cut["cutoff"],
            notification_cutoff=cut["notification_cutoff"],
            deliveries=int(row["deliveries"]),
            ledger_notifications=int(row["ledger_notifications"]),
            rule_fires=int(row["rule_fires"]),
            budget_rows=int(row["budget_rows"]),
            notifications=None if row["notifications"] is None else int(row["notifications"]),
            prune_runs=int(row["prune_runs"]),
        )

    async def begin(self, source: str) -> PruneRun:
        """Take the lease and record a new run with its cutoffs; PruneBusyError when another prune holds it."""
        async with self.pool.acquire() as conn, conn.transaction():
            lease = await conn.fetchrow(q("retention_lease"), self.policy.lease_s)
            assert lease is not None
            if not lease["free"]:
                holder = await conn.fetchrow(q("retention_run"), lease["run_id"])
                since = f", by {holder['source']} since {holder['started_at'].isoformat(timespec='seconds')}"
                raise PruneBusyError(
                    f"another prune is running (run {lease['run_id']}{since if holder else ''}); try again when it "
                    "has finished"
                )
            row = await conn.fetchrow(q("retention_run_begin"), source, self.policy.days, self.policy.notification_days)
        assert row is not None
        run = _run(row)
        log.info(
            "prune started",
            extra={"run_id": run.id, "source": source, "cutoff": run.cutoff.isoformat(), "days": self.policy.days},
        )
        return run

    async def step(
        self, run_id: int, *, deadline: float | None = None, on_batch: Callable[[], None] | None = None
    ) -> bool:
        """Prune batch after batch until nothing older than the run's cutoffs is left (True) or `deadline`
        (time.monotonic()) has passed (False: call again). `on_batch` is called after every batch (a heartbeat)."""
        run = await self.get(run_id)
        passes: list[Batch] = [self._ledger, self._rule_fires, self._budget]
        if run.notification_cutoff is not None:
            passes.append(self._notifications)
        passes.append(self._runs)
        for batch in passes:
            while True:
                if deadline is not None and time.monotonic() >= deadline:
                    return False
                more = await self._one(run, batch)
                if on_batch is not None:
                    on_batch()
                if not more:
                    break
        return True

    async def finish(self, run_id: int, error: str | None = None) -> PruneRun:
        """End the run (with why it stopped early, if it did) and give the lease back."""
        row = await self.pool.fetchrow(q("retention_run_finish"), run_id, error)
        if row is None:
            raise DatabaseError(f"prune run {run_id} is not recorded (notify.xnovu_prune_run)")
        run = _run(row)
        log.info(
            "prune finished",
            extra={
                "run_id": run.id,
                "deliveries": run.deliveries,
                "rule_fires": run.rule_fires,
                "budget_rows": run.budget_rows,
                "notifications": run.notifications,
                "batches": run.batches,
                "longest_batch_ms": run.longest_batch_ms,
                "error": error,
            },
        )
        return run

    async def run(self, source: str = "cli", *, on_batch: Callable[[], None] | None = None) -> PruneRun:
        """A whole prune: begin, every pass to the end, finish (what `xnovu db prune` does)."""
        run = await self.begin(source)
        try:
            await self.step(run.id, on_batch=on_batch)
        except BaseException as exc:
            await asyncio.shield(self._finish_quietly(run.id, f"stopped: {type(exc).__name__}: {exc}"[:500]))
            raise
        return await self.finish(run.id)

    async def _finish_quietly(self, run_id: int, error: str) -> None:
        try:
            await self.finish(run_id, error)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, XnovuError) as exc:
            log.warning("could not record how a prune stopped", extra={"run_id": run_id, "error": type(exc).__name__})

    async def get(self, run_id: int) -> PruneRun:
        """The run as recorded now."""
        row = await self.pool.fetchrow(q("retention_run"), run_id)
        if row is None:
            raise DatabaseError(f"prune run {run_id} is not recorded (notify.xnovu_prune_run)")
        return _run(row)

    async def _one(self, run: PruneRun, batch: Batch) -> bool:
        """One batch in its own transaction (lease renewed, counts recorded), then the pause."""
        started = time.monotonic()
        async with self.pool.acquire() as conn, conn.transaction():
            result = await batch(conn, run)
            elapsed_ms = int((time.monotonic() - started) * 1000)
            await conn.execute(
                q("retention_run_add"),
                run.id,
                result.deliveries,
                result.rule_fires,
                result.budget_rows,
                result.notifications,
                result.prune_runs,
                elapsed_ms,
            )
        if result.more and self.policy.pause_ratio > 0:
            await self._sleep((time.monotonic() - started) * self.policy.pause_ratio)
        return result.more

    async def _renew(self, conn: asyncpg.Connection, run: PruneRun) -> asyncpg.Record:
        state = await conn.fetchrow(q("retention_lease_renew"), run.id, self.policy.lease_s)
        if state is None:
            raise PruneBusyError(
                f"prune run {run.id} lost its lease to another prune (it stopped heartbeating for over "
                f"{self.policy.lease_s:.0f} s); that one goes on"
            )
        return state

    async def _ledger(self, conn: asyncpg.Connection, run: PruneRun) -> _Batch:
        """Up to `batch_rows` ledger rows of the next ended notifications; the watermark moves past every
        notification whose ledger is now empty, and stops at the first one that still has rows."""
        p = self.policy
        state = await self._renew(conn, run)
        candidates = await conn.fetch(
            q("retention_ledger_candidates"),
            state["ledger_after_updated_at"],
            state["ledger_after_id"],
            run.cutoff,
            p.candidates,
        )
        if not candidates:
            return _Batch(more=False)
        dead = [r["id"] for r in candidates if r["dead"]]
        locked: set[int] = set()
        blocked: set[int] = set()
        if dead:
            locked = {r["id"] for r in await conn.fetch(q("retention_lock_dead"), dead, run.cutoff)}
            unlocked = [i for i in dead if i not in locked]
            if unlocked:  # being changed right now: wait for the next batch, unless a requeue moved it on
                blocked = {r["id"] for r in await conn.fetch(q("retention_still_dead"), unlocked, run.cutoff)}
        ids = [r["id"] for r in candidates if not r["dead"] or r["id"] in locked]
        gone = await conn.fetch(q("retention_ledger_delete"), ids, p.batch_rows)
        deleted = {r["notification_id"]: int(r["n"]) for r in gone}
        total = sum(deleted.values())
        if total >= p.batch_rows:
            blocked |= {r["id"] for r in await conn.fetch(q("retention_ledger_remaining"), ids)}
        marked = [i for i in locked if deleted.get(i)]
        if marked:
            await conn.execute(q("retention_mark_ledger_pruned"), marked)
        last = None
        for r in candidates:
            if r["id"] in blocked:
                break
            last = r
        if last is not None:
            await conn.execute(q("retention_watermark"), last["updated_at"], last["id"])
        elif total == 0:
            # Nothing deleted and nothing passed: the first candidate is being changed by someone else. The next
            # run tries again; this one goes on with the other tables.
            log.info("prune: the ledger waits for a row being changed", extra={"notification_id": candidates[0]["id"]})
            return _Batch(more=False)
        return _Batch(more=bool(blocked) or len(candidates) == p.candidates, deliveries=total)

    async def _rule_fires(self, conn: asyncpg.Connection, run: PruneRun) -> _Batch:
        await self._renew(conn, run)
        n = _count(await conn.execute(q("retention_rule_fires_delete"), run.cutoff, self.policy.batch_rows))
        return _Batch(more=n >= self.policy.batch_rows, rule_fires=n)

    async def _budget(self, conn: asyncpg.Connection, run: PruneRun) -> _Batch:
        await self._renew(conn, run)
        return _Batch(more=False, budget_rows=_count(await conn.execute(q("retention_budget_delete"), run.cutoff)))

    async def _notifications(self, conn: asyncpg.Connection, run: PruneRun) -> _Batch:
        await self._renew(conn, run)
        try:
            n = _count(
                await conn.execute(q("retention_notifications_delete"), run.notification_cutoff, self.policy.candidates)
            )
        except asyncpg.ForeignKeyViolationError as exc:
            raise DatabaseError(
                f"a notification cannot be deleted: {exc.detail or exc} ({exc.constraint_name}); let that foreign key "
                "cascade or set null on delete, or keep the notifications (no --notifications, "
                "RETENTION_NOTIFICATION_DAYS unset)"
            ) from None
        return _Batch(more=n >= self.policy.candidates, notifications=n)

    async def _runs(self, conn: asyncpg.Connection, run: PruneRun) -> _Batch:
        await self._renew(conn, run)
        return _Batch(more=False, prune_runs=_count(await conn.execute(q("retention_runs_delete"), run.cutoff, run.id)))


def _count(status: str) -> int:
    """Rows of a command tag such as 'DELETE 42'."""
    return int(status.rsplit(" ", 1)[-1])


async def last_prune(pool: asyncpg.Pool) -> PruneRun | None:
    """The latest prune (running or finished), or None before the first."""
    row = await pool.fetchrow(q("retention_last_run"))
    return _run(row) if row is not None else None


async def table_sizes(pool: asyncpg.Pool) -> dict[str, dict[str, int | None]]:
    """Rows (the planner's estimate) and bytes (with indexes and TOAST) of xnovu's tables, from the catalogue only."""
    rows = await pool.fetch(q("table_sizes"), list(TABLES))
    return {r["name"]: {"rows_estimate": r["rows_estimate"], "bytes": int(r["bytes"])} for r in rows}
