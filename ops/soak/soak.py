"""One soak run: a plan (ops/soak/plan.py) played against real worker subprocesses on the local stack, checked
continuously and at the end. Used by ops/soak/run.py and tests/soak/test_soak.py; see ops/soak/README.md.

The stack, the worker subprocesses and the emulator's control API come from the fault suite
(ops/faults/scenarios.py: FaultStack, ScenarioRun); this module adds the mixed load, the fault schedule and the
checker. The invariants checked are those of docs/design.md "The invariants" (I1, I2, I3, I7):

- every row ends terminal (SENT, dead-lettered with a readable `error_details.error`, RETRACTED) or is held with its
  reason visible (the row unpublished/deactivated, its workflow DRAFT/NONE/deactivated, or its send time ahead);
- no recipient is delivered twice with Novu idempotency on; with it off, no more extra copies than the ledger has
  recorded outcomes that were not acknowledgements (each may have been an unknown outcome Novu processed), plus
  copies sent just before a worker or Postgres was killed (an outcome nobody could record);
- no stall: while rows are due, deliveries or terminal rows progress within 2 x the lease plus the budget's own time
  (100 tokens / NOVU_RATE_LIMIT_RPS, plus Novu's Retry-After) plus a fixed slack for polls and a small machine;
- no insert waits more than 1 s (outside a Postgres outage);
- a SENT row has every recipient SENT in the ledger and delivered; a ledger SENT recipient was delivered;
- nothing that must not be sent is sent: drafts never published, rows after their retract, rows before their time.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import os
import random
import signal
import sys
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import asyncpg

from xnovu.db.queries import q
from xnovu.devtools.pgbouncer import PgBouncer, pgbouncer_binary, start_pgbouncer
from xnovu.devtools.stack import ChildProcess
from xnovu.novu.client import transaction_id_for

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


def _load(name: str, path: Path) -> ModuleType:
    """A file of ops/ by path (ops/ is tooling, not a package); one copy per name."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the file executes
    spec.loader.exec_module(module)
    return module


_plan = _load("xnovu_soak_plan", HERE / "plan.py")
WORKFLOWS = _plan.WORKFLOWS
Fault = _plan.Fault
Insert = _plan.Insert
Plan = _plan.Plan
make_plan = _plan.make_plan

#: What a statement meets while Postgres restarts: it is retried, not a finding.
DISCONNECTED = (
    OSError,
    TimeoutError,
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,
)
#: A pooled connection left mid-operation ("cannot switch to state 12; another operation (2) is in progress"): seen
#: once in the harness's own pool at the end of a 60-minute run with many Postgres restarts. It says nothing about
#: xnovu: the connection is dropped and the read done again on a fresh one.
BROKEN_CONNECTION = (asyncpg.exceptions.InternalClientError,)
#: Slack added to the stall limit: poll intervals (1 s), retry backoff (2 s), worker start-up on a busy machine.
STALL_SLACK_S = 15.0
INSERT_LIMIT_S = 1.0
#: After everything is terminal or held, keep watching this long (a late duplicate from a zombie attempt counts).
SETTLE_S = 3.0


#: The fault suite's stack and scenario world, under the name ops/faults/run.py and tests/faults load it by.
sc = _load("xnovu_faults_scenarios", ROOT / "ops" / "faults" / "scenarios.py")


def reproduce_command(seed: int, minutes: float) -> str:
    return f"reproduce: .venv/bin/python ops/soak/run.py --seed {seed} --minutes {minutes:g}"


@dataclass
class Finding:
    kind: str
    """stall | insert_latency | not_terminal | duplicate | ledger | must_not_send | worker_exit | error"""
    detail: str
    at_s: float | None = None


@dataclass
class SoakResult:
    seed: int
    minutes: float
    plan: str
    findings: list[Finding] = field(default_factory=list)
    rows: int = 0
    recipients: int = 0
    deliveries: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    held: int = 0
    duplicates_allowed: int = 0
    max_insert_s: float = 0.0
    longest_quiet_s: float = 0.0
    duration_s: float = 0.0
    faults_done: list[str] = field(default_factory=list)
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.findings

    def add(self, kind: str, detail: str, at_s: float | None = None) -> None:
        self.findings.append(Finding(kind, detail, at_s))

    def headline(self) -> str:
        kinds = Counter(f.kind for f in self.findings)
        return ", ".join(f"{k} x{n}" for k, n in kinds.items()) if kinds else "ok"

    def as_dict(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "minutes": self.minutes,
            "ok": self.ok,
            "plan": self.plan,
            "reproduce": reproduce_command(self.seed, self.minutes),
            "findings": [f.__dict__ for f in self.findings],
            "rows": self.rows,
            "recipients": self.recipients,
            "deliveries": self.deliveries,
            "statuses": self.statuses,
            "held": self.held,
            "duplicates_allowed": self.duplicates_allowed,
            "max_insert_s": round(self.max_insert_s, 3),
            "longest_quiet_s": round(self.longest_quiet_s, 1),
            "duration_s": round(self.duration_s, 1),
            "faults_done": self.faults_done,
            "notes": self.notes,
        }


@dataclass
class Row:
    id: int
    recipients: list[str]
    draft: bool
    scheduled_for: datetime | None


class Soak(sc.ScenarioRun):  # type: ignore[misc,name-defined]
    """The world of one seed: database, namespace, workers (slots that faults kill and refill), the load and the
    checker. `run()` never raises for a product failure: it is a Finding in the result."""

    def __init__(self, stack: Any, plan: Plan, *, say: Callable[[str], None], pgbouncer: Any = None) -> None:
        super().__init__(stack, f"soak{plan.seed}", 0, timeout_s=0, say=say)
        self.plan = plan
        self.result = SoakResult(plan.seed, plan.minutes, plan.summary())
        self.pgbouncer = pgbouncer
        self.t0 = 0.0
        self.pool: asyncpg.Pool | None = None
        self.workflow_ids: list[int] = []
        #: Priorities (None: normal, then an urgent and a low one) and enterprises (None: the rows without one) the
        #: rows are spread over, so the soak runs the claims' urgency classes and fair share (docs/priority.md).
        #: Drawn from a generator of the harness's own, so the plan of a seed (its faults and inserts) is unchanged.
        self.priority_ids: list[int | None] = [None]
        self.enterprises: list[str | None] = [
            None,
            str(uuid.UUID(int=plan.seed + 1)),
            str(uuid.UUID(int=plan.seed + 2)),
        ]
        self.spread = random.Random(f"soak-spread-{plan.seed}")
        self.deleted: set[int] = set()
        self.rows: dict[int, Row] = {}
        self.retracted_at: dict[int, datetime] = {}
        self.slots: dict[int, ChildProcess | None] = {}
        self.stopped: set[int] = set()
        self.expected_exit: set[int] = set()
        self.killed: set[int] = set()
        """Worker pids a fault killed or stopped on purpose."""
        self.generation = 0
        self.pg_down: list[tuple[float, float]] = []
        self.pg_down_since: float | None = None
        self.crash_times: list[datetime] = []
        self.excuse_until = 0.0
        self.load_done = False
        self.background: list[asyncio.Task[Any]] = []

    def now_s(self) -> float:
        return time.monotonic() - self.t0

    def log(self, msg: str) -> None:
        self.say(f"[seed {self.plan.seed} t+{self.now_s():5.1f}s] {msg}")

    # -- set-up

    async def prepare(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.database_url = await self.stack.new_database(f"soak_{self.tag}")
        self.admin_database_url = self.database_url
        if self.pgbouncer is not None:
            name = f"soak_{self.tag}"
            self.database_url = self.pgbouncer.url(name, "pgbouncer=true")
        await self.stack.emulator_post("/emulator/reset", {"config": True})
        await self.stack.configure_emulator(
            idempotency=self.plan.idempotency,
            latency_ms=self.plan.latency_ms,
            timeout_delay_s=self.plan.novu_timeout_ms / 1000 * 1.5,
            seed=self.plan.seed,
        )
        self.pool = await asyncpg.create_pool(self.admin_database_url, min_size=0, max_size=6)
        for key in WORKFLOWS:
            wid = await self.pool.fetchval(q("upsert_workflow"), key, f"{key}-{self.tag}", ["IN_APP"], None)
            self.workflow_ids.append(int(wid))
        for name, sort_order in (("soak urgent", 2), ("soak low", -1)):
            pid = await self.pool.fetchval(
                "INSERT INTO notify.typ_notification_priority (name, sort_order, publish_status)"
                " VALUES ($1, $2, 'PUBLISH') RETURNING id",
                f"{name} {self.tag}",
                sort_order,
            )
            self.priority_ids.append(int(pid))
        if self.plan.history:
            await self.pool.execute(HISTORY_SQL, self.workflow_ids[0], self.plan.history)
            await self.pool.execute("ANALYZE notify.ent_notification")

    def worker_overrides(self) -> dict[str, str]:
        p = self.plan
        return {
            "PROCESSING_LEASE_MS": str(p.lease_ms),
            "NOVU_RATE_LIMIT_RPS": str(p.rps),
            "MAX_ATTEMPTS": str(p.max_attempts),
            "NOVU_TIMEOUT_MS": str(p.novu_timeout_ms),
        }

    async def start_slot(self, slot: int) -> None:
        self.generation += 1
        name = f"worker-{slot}-g{self.generation}"
        self.slots[slot] = None
        child = await self.start_worker(name, wait_healthy=False, **self.worker_overrides())
        self.slots[slot] = child
        try:
            await self.wait_healthy(name, child, timeout_s=120)
        except Exception as exc:
            # The watcher restarts a worker that exited; here only say why, unless a fault explains it.
            if child.pid not in self.killed and not self.in_outage():
                self.result.add("worker_exit", f"{name} did not become healthy: {exc}", self.now_s())

    def in_outage(self) -> bool:
        """Postgres is down or came back less than 30 s ago: a worker may fail to start (behind pgbouncer, its
        `server_login_retry` refuses logins for a while after the server failed), as under any supervisor."""
        if self.pg_down_since is not None:
            return True
        return any(time.monotonic() - end < 30 for _, end in self.pg_down)

    # -- the load

    async def _execute(self, what: str, sql: str, *args: Any) -> list[asyncpg.Record]:
        """A statement in a transaction of its own, retried across a Postgres outage; flags a slow insert (I7)."""
        assert self.pool is not None
        give_up = time.monotonic() + 120
        while True:
            started = time.monotonic()
            try:
                async with self.pool.acquire(timeout=10) as conn:
                    started = time.monotonic()  # the statement's wait, not the harness pool's
                    async with conn.transaction():
                        rows = await conn.fetch(sql, *args)
            except BROKEN_CONNECTION:
                await self._drop_connections()
                if time.monotonic() > give_up:
                    raise
                continue
            except DISCONNECTED:
                if time.monotonic() > give_up:
                    raise
                await asyncio.sleep(0.5)
                continue
            took = time.monotonic() - started
            if what == "insert":
                self.result.max_insert_s = max(self.result.max_insert_s, took)
                if took > INSERT_LIMIT_S and not self._overlaps_outage(started, time.monotonic()):
                    self.result.add(
                        "insert_latency", f"an insert waited {took:.2f} s (limit {INSERT_LIMIT_S:g} s)", self.now_s()
                    )
            return list(rows)

    async def _drop_connections(self) -> None:
        assert self.pool is not None
        self.result.notes["harness_reconnects"] = self.result.notes.get("harness_reconnects", 0) + 1
        await self.pool.expire_connections()

    async def _read(self, sql: str, *args: Any, one: bool = False) -> Any:
        """A read of the checker on a connection of the harness's pool, done again on a fresh connection when the
        pooled one is broken (BROKEN_CONNECTION); other errors go to the caller."""
        assert self.pool is not None
        for attempt in range(3):
            try:
                async with self.pool.acquire(timeout=5) as conn:
                    return await (conn.fetchrow(sql, *args) if one else conn.fetch(sql, *args))
            except BROKEN_CONNECTION:
                if attempt == 2:
                    raise
                await self._drop_connections()
        raise AssertionError("unreachable")

    def _overlaps_outage(self, start: float, end: float) -> bool:
        if self.pg_down_since is not None:
            return True
        return any(a - 1 <= end and start <= b + 5 for a, b in self.pg_down)

    async def insert(self, ins: Insert) -> None:
        wf = self.workflow_ids[ins.workflow]
        recipients = [[str(uuid.uuid4()) for _ in range(n)] for n in ins.recipients]
        now = datetime.now(UTC)
        scheduled = [None if s is None else now + timedelta(seconds=s) for s in ins.scheduled_in_s]
        records = await self._execute(
            "insert",
            q("insert_notifications"),
            wf,
            [f"soak-{self.plan.seed}" for _ in recipients],
            ["DRAFT" if d else "PUBLISH" for d in ins.draft],
            [json.dumps({"seed": self.plan.seed, "n": len(r)}) for r in recipients],
            [",".join(r) for r in recipients],
            scheduled,
            self.spread.choice(self.enterprises),
            [self.spread.choice(self.priority_ids) for _ in recipients],
        )
        ids = [int(r["id"]) for r in records]
        for nid, rec, draft, when in zip(ids, recipients, ins.draft, scheduled, strict=True):
            self.rows[nid] = Row(nid, rec, draft, when)
        if ins.publish_at_s is not None:
            drafts = [nid for nid, d in zip(ids, ins.draft, strict=True) if d]
            self.background.append(asyncio.create_task(self._publish_later(drafts, ins.publish_at_s)))

    async def _publish_later(self, ids: list[int], at_s: float) -> None:
        await asyncio.sleep(max(0.0, at_s - self.now_s()))
        await self._execute(
            "edit",
            "UPDATE notify.ent_notification SET publish_status = 'PUBLISH' WHERE id = ANY($1::bigint[])",
            ids,
        )
        for nid in ids:
            self.rows[nid].draft = False
        self.log(f"published {len(ids)} draft rows")

    async def load(self) -> None:
        for ins in self.plan.inserts:
            await asyncio.sleep(max(0.0, ins.at_s - self.now_s()))
            await self.insert(ins)
        self.log(f"load done: {len(self.rows)} rows inserted")

    # -- the faults

    async def faults(self) -> None:
        for fault in self.plan.faults:
            await asyncio.sleep(max(0.0, fault.at_s - self.now_s()))
            self.result.faults_done.append(fault.describe())
            self.log(f"fault: {fault.describe()}")
            self.background.append(asyncio.create_task(self._guarded(fault)))

    async def _guarded(self, fault: Fault) -> None:
        try:
            await getattr(self, f"_fault_{fault.kind}")(fault)
        except Exception as exc:
            self.result.add("error", f"harness: fault {fault.describe()} raised {type(exc).__name__}: {exc}")

    def _child(self, slot: int) -> ChildProcess | None:
        child = self.slots.get(slot)
        return child if child is not None and child.alive else None

    async def _fault_kill(self, f: Fault, *, stopped_too: bool = False) -> None:
        child = self._child(f.worker)
        if child is None or (f.worker in self.stopped and not stopped_too):
            return
        self.expected_exit.add(f.worker)
        self.killed.add(child.pid)
        self.crash_times.append(datetime.now(UTC))
        await asyncio.to_thread(child.kill)
        self.slots[f.worker] = None
        await asyncio.sleep(f.down_s)
        self.expected_exit.discard(f.worker)
        await self.start_slot(f.worker)

    async def _fault_kill_all(self, f: Fault) -> None:
        await asyncio.gather(
            *(self._fault_kill(Fault(f.at_s, "kill", worker=s, down_s=f.down_s), stopped_too=True) for s in self.slots)
        )

    async def _fault_restart(self, f: Fault) -> None:
        child = self._child(f.worker)
        if child is None or f.worker in self.stopped:
            return
        self.expected_exit.add(f.worker)
        self.killed.add(child.pid)
        await asyncio.to_thread(child.stop, signal.SIGTERM, 40.0)
        self.slots[f.worker] = None
        self.expected_exit.discard(f.worker)
        await self.start_slot(f.worker)

    async def _fault_stall(self, f: Fault) -> None:
        child = self._child(f.worker)
        if child is None or f.worker in self.stopped:
            return
        self.stopped.add(f.worker)
        self.crash_times.append(datetime.now(UTC))
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGSTOP)
        try:
            await asyncio.sleep(f.down_s)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signal.SIGCONT)
            self.stopped.discard(f.worker)
            self.crash_times.append(datetime.now(UTC))
        self.log(f"SIGCONT worker-{f.worker}")

    async def _novu_window(self, f: Fault, on: dict[str, Any], off: dict[str, Any]) -> None:
        await self.stack.configure_emulator(**on)
        try:
            await asyncio.sleep(f.down_s)
        finally:
            await self.stack.configure_emulator(**off)

    async def _fault_novu_5xx(self, f: Fault) -> None:
        await self._novu_window(f, {"error_rate": f.rate}, {"error_rate": 0.0})

    async def _fault_novu_timeouts(self, f: Fault) -> None:
        await self._novu_window(f, {"timeout_rate": f.rate}, {"timeout_rate": 0.0})

    async def _fault_novu_429(self, f: Fault) -> None:
        await self._novu_window(f, {"rate_limit_rps": f.rps}, {"rate_limit_rps": None})

    async def _fault_pg_restart(self, f: Fault) -> None:
        if self.pg_down_since is not None:
            return
        pg = self.stack.started_postgres
        self.pg_down_since = time.monotonic()
        self.crash_times.append(datetime.now(UTC))
        try:
            await asyncio.to_thread(pg.stop)
            await asyncio.sleep(f.down_s)
        finally:
            await asyncio.to_thread(pg.restart)
            self.pg_down.append((self.pg_down_since, time.monotonic()))
            self.pg_down_since = None
            self.crash_times.append(datetime.now(UTC))
            self.excuse_until = time.monotonic() + 5
        self.log("Postgres back")

    async def _fault_migrate(self, f: Fault) -> None:
        """Forget two migrations (and drop one claim index) so `xnovu db migrate` really runs them again: an index
        build (CREATE INDEX CONCURRENTLY) and trigger DDL on the live table, while rows are inserted and claimed."""
        await self._execute("edit", "DROP INDEX IF EXISTS notify.ent_notification_xnovu_dlq_idx")
        await self._execute(
            "edit",
            "DELETE FROM notify.xnovu_schema_migrations WHERE version LIKE '0004%' OR version LIKE '0005%'",
        )
        env = self.worker_env("migrate")
        started = time.monotonic()
        child = ChildProcess.spawn(f"migrate-{self.generation}", ["-m", "xnovu", "db", "migrate"], env, self.dir)
        code = await asyncio.to_thread(child.process.wait, 300)
        took = time.monotonic() - started
        self.log(f"migrate exited {code} after {took:.1f} s")
        if code != 0 and not self._overlaps_outage(started, time.monotonic()):
            self.result.add("error", f"`xnovu db migrate` during load exited {code}: {child.tail()}", self.now_s())

    async def _set_workflow(self, index: int, sql: str) -> None:
        await self._execute("edit", sql, self.workflow_ids[index])

    async def _fault_wf_hold(self, f: Fault) -> None:
        await self._set_workflow(
            f.workflow, "UPDATE notify.ent_notification_workflow SET deactivated = true WHERE id = $1"
        )
        await asyncio.sleep(f.down_s)
        await self._set_workflow(
            f.workflow, "UPDATE notify.ent_notification_workflow SET deactivated = false WHERE id = $1"
        )

    async def _fault_wf_unpublish(self, f: Fault) -> None:
        if f.workflow in self.deleted:
            return
        await self._set_workflow(
            f.workflow,
            "UPDATE notify.ent_notification_workflow SET publish_status = 'DRAFT' "
            "WHERE id = $1 AND publish_status = 'PUBLISH'",
        )
        await asyncio.sleep(f.down_s)
        await self._set_workflow(
            f.workflow,
            "UPDATE notify.ent_notification_workflow SET publish_status = 'PUBLISH' "
            "WHERE id = $1 AND publish_status = 'DRAFT'",
        )

    async def _fault_wf_delete(self, f: Fault) -> None:
        self.deleted.add(f.workflow)
        await self._set_workflow(
            f.workflow, "UPDATE notify.ent_notification_workflow SET publish_status = 'DELETED' WHERE id = $1"
        )

    def _pick(self, count: int, salt: int) -> list[int]:
        """Rows to edit, picked by the seed (a pure function of the ids inserted so far and the fault)."""
        import random

        rng = random.Random(self.plan.seed * 1_000_003 + salt)
        ids = sorted(self.rows)
        return sorted(rng.sample(ids, min(count, len(ids)))) if ids else []

    async def _fault_retract(self, f: Fault) -> None:
        ids = self._pick(f.count, int(f.at_s * 10))
        for nid in ids:
            rows = await self._execute(
                "edit", q("retract").replace("RETURNING id", "RETURNING id, retracted_at"), nid, "soak retract"
            )
            if rows:
                self.retracted_at[nid] = rows[0]["retracted_at"]

    async def _fault_bulk_edit(self, f: Fault) -> None:
        ids = self._pick(f.count, int(f.at_s * 10) + 7)
        live = "notification_status IN ('PENDING', 'PROCESSING', 'FAILED')"
        if f.variant == "payload":
            await self._execute(
                "edit",
                f"UPDATE notify.ent_notification SET payload = payload || jsonb_build_object('edited', now()::text) "
                f"WHERE id = ANY($1::bigint[]) AND {live}",
                ids,
            )
            return
        changed = await self._execute(
            "edit",
            f"UPDATE notify.ent_notification SET publish_status = 'DRAFT' "
            f"WHERE id = ANY($1::bigint[]) AND publish_status = 'PUBLISH' AND {live} RETURNING id",
            ids,
        )
        back = [int(r["id"]) for r in changed]
        await asyncio.sleep(f.down_s)
        await self._execute(
            "edit",
            "UPDATE notify.ent_notification SET publish_status = 'PUBLISH' WHERE id = ANY($1::bigint[])",
            back,
        )

    # -- the checker

    async def observe(self) -> tuple[int, int, dict[str, int]] | None:
        """(due rows, progress counter, counts by status), or None while Postgres does not answer."""
        assert self.pool is not None
        try:
            row = await self._read(DUE_SQL, list(self.rows), one=True)
            stats = await self.stack.emulator_get("/emulator/stats")
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
            return None
        assert row is not None
        statuses = json.loads(row["statuses"]) if row["statuses"] else {}
        return int(row["due"]), int(stats["deliveries"]) + int(row["finished"]), statuses

    async def _restart_later(self, slot: int) -> None:
        await asyncio.sleep(1.0)
        if self.slots.get(slot) is None:
            await self.start_slot(slot)

    def excused(self) -> str | None:
        if self.pg_down_since is not None or time.monotonic() < self.excuse_until:
            return "Postgres down"
        running = [s for s, c in self.slots.items() if c is not None and c.alive and s not in self.stopped]
        if not running:
            return "no worker running"
        return None

    def stall_limit_s(self) -> float:
        p = self.plan
        return 2 * p.lease_ms / 1000 + 100 / p.rps + 5 + STALL_SLACK_S

    async def watch(self, stop: asyncio.Event) -> None:
        last_value = -1
        last_progress = time.monotonic()
        stalled_reported = False
        while not stop.is_set():
            await asyncio.sleep(1.0)
            for slot, child in list(self.slots.items()):
                if child is not None and not child.alive and slot not in self.expected_exit:
                    if child.pid not in self.killed and not self.in_outage():
                        self.result.add(
                            "worker_exit",
                            f"{child.name} exited with code {child.process.returncode}: {child.tail()}",
                            self.now_s(),
                        )
                    else:
                        self.result.notes["worker_restarts_in_outage"] = (
                            self.result.notes.get("worker_restarts_in_outage", 0) + 1
                        )
                    self.slots[slot] = None
                    self.background.append(asyncio.create_task(self._restart_later(slot)))
            seen = await self.observe()
            excuse = self.excused()
            now = time.monotonic()
            if seen is None or excuse is not None:
                last_progress = now
                continue
            due, value, _ = seen
            if value != last_value or due == 0:
                quiet = now - last_progress
                self.result.longest_quiet_s = max(self.result.longest_quiet_s, quiet if due else 0)
                last_value, last_progress, stalled_reported = value, now, False
                continue
            quiet = now - last_progress
            self.result.longest_quiet_s = max(self.result.longest_quiet_s, quiet)
            if quiet > self.stall_limit_s() and not stalled_reported:
                stalled_reported = True
                self.result.add(
                    "stall",
                    f"{due} rows due and no delivery or terminal row for {quiet:.0f} s "
                    f"(limit {self.stall_limit_s():.0f} s = 2 x lease + 100 tokens / budget + Retry-After + slack)",
                    self.now_s(),
                )
                self.log(f"STALL: {due} rows due, nothing moved for {quiet:.0f} s")

    # -- healing and draining

    async def heal(self) -> None:
        """End of the load: every fault off, every worker slot running, so the rows can drain."""
        for task in self.background:
            if not task.done():
                with contextlib.suppress(asyncio.TimeoutError, Exception):
                    await asyncio.wait_for(asyncio.shield(task), 60)
        await self.stack.configure_emulator(error_rate=0.0, timeout_rate=0.0, rate_limit_rps=None)
        for slot in range(self.plan.workers):
            if self._child(slot) is None:
                await self.start_slot(slot)

    async def drain(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            rows = await self.final_rows()
            # A row scheduled ahead is a valid hold at the end, but while draining it is only waiting for its time
            # (the plan schedules at most 20 s ahead): the drain waits for it to be sent.
            if rows is not None and all(
                (self.settled(r) or "held: scheduled").startswith(("terminal", "held: row", "held: workflow"))
                for r in rows
            ):
                return True
            await asyncio.sleep(1.0)
        return False

    async def final_rows(self) -> list[asyncpg.Record] | None:
        assert self.pool is not None
        try:
            return list(await self._read(ROWS_SQL, list(self.rows)))
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
            return None

    @staticmethod
    def settled(r: asyncpg.Record) -> str | None:
        """'terminal', 'held: <reason>', or None (still in flight or stuck)."""
        status = r["status"]
        if status in ("SENT", "RETRACTED"):
            return "terminal"
        if status == "FAILED" and r["dead"]:
            return "terminal"
        if status == "PENDING":
            if r["publish_status"] != "PUBLISH":
                return f"held: row {r['publish_status']}"
            if r["deactivated"]:
                return "held: row deactivated"
            if r["wf_publish_status"] in ("DRAFT", "NONE"):
                return f"held: workflow {r['wf_publish_status']}"
            if r["wf_deactivated"]:
                return "held: workflow deactivated"
            if r["scheduled_for"] is not None and r["scheduled_for"] > r["now"]:
                return "held: scheduled ahead"
        return None

    # -- the final checks

    async def final_checks(self, drained: bool) -> None:
        res = self.result
        rows = await self.final_rows()
        if rows is None:
            res.add("error", "the database does not answer at the end")
            return
        assert self.pool is not None
        ledger = await self._read(LEDGER_SQL, list(self.rows))
        events = await self.stack.emulator_get("/emulator/events")
        (self.dir / "emulator-events.json").write_text(json.dumps(events))
        res.rows = len(rows)
        res.recipients = sum(len(r.recipients) for r in self.rows.values())
        res.deliveries = len(events)
        res.statuses = dict(Counter(r["status"] + ("/dead" if r["dead"] else "") for r in rows))

        unsettled = [r for r in rows if self.settled(r) is None]
        res.held = sum(1 for r in rows if (self.settled(r) or "").startswith("held"))
        if unsettled:
            sample = ", ".join(f"{r['id']}:{r['status']}(attempts {r['attempts']})" for r in unsettled[:8])
            res.add("not_terminal", f"{len(unsettled)} rows neither terminal nor held with a reason: {sample}")
        no_reason = [r["id"] for r in rows if r["status"] == "FAILED" and r["dead"] and not (r["error"] or "").strip()]
        if no_reason:
            res.add("not_terminal", f"{len(no_reason)} dead-lettered rows without error_details.error: {no_reason[:8]}")

        # Deliveries per (row, recipient), from the emulator's records.
        by_tx: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for e in events:
            by_tx[e["transactionId"]].append(e)
        led: dict[tuple[int, str], asyncpg.Record] = {(r["notification_id"], r["recipient_id"]): r for r in ledger}

        crash = sorted(self.crash_times)
        grace = timedelta(seconds=self.plan.novu_timeout_ms / 1000 + 2)

        def near_crash(when: datetime) -> bool:
            return any(c - grace <= when <= c + timedelta(seconds=1) for c in crash)

        dup_fail: list[str] = []
        allowed = 0
        for row in rows:
            nid = row["id"]
            for rid in dict.fromkeys(self.rows[nid].recipients):
                copies = by_tx.get(transaction_id_for(nid, rid), [])
                extra = len(copies) - 1
                if extra <= 0:
                    continue
                if self.plan.idempotency:
                    dup_fail.append(f"{nid}/{rid[:8]} x{len(copies)}")
                    continue
                entry = led.get((nid, rid))
                recorded = 0
                if entry is not None:
                    recorded = entry["attempts"] - (1 if entry["status"] == "SENT" else 0)
                crashes = sum(1 for c in copies[:-1] if near_crash(_parse_ts(c["receivedAt"])))
                if extra <= recorded + crashes:
                    allowed += extra
                else:
                    same_key = len({c["idempotencyKey"] for c in copies}) < len(copies)
                    why = f"ledger: {recorded} unknown, {crashes} at a crash" + (", a key re-sent" if same_key else "")
                    dup_fail.append(f"{nid}/{rid[:8]} x{len(copies)} ({why})")
        res.duplicates_allowed = allowed
        if dup_fail:
            what = "with idempotency on" if self.plan.idempotency else "beyond the recorded unknown outcomes"
            res.add("duplicate", f"{len(dup_fail)} recipients delivered more than once {what}: {dup_fail[:6]}")

        # Status vs ledger vs emulator.
        mismatch: list[str] = []
        lost: list[str] = []
        for row in rows:
            nid = row["id"]
            recipients = list(dict.fromkeys(self.rows[nid].recipients))
            if row["status"] == "SENT":
                not_sent = [rid for rid in recipients if (e := led.get((nid, rid))) is None or e["status"] != "SENT"]
                if not_sent:
                    mismatch.append(f"{nid} SENT but {len(not_sent)}/{len(recipients)} recipients not SENT in ledger")
            for rid in recipients:
                e = led.get((nid, rid))
                if e is not None and e["status"] == "SENT" and not by_tx.get(transaction_id_for(nid, rid)):
                    lost.append(f"{nid}/{rid[:8]}")
        if mismatch:
            res.add("ledger", f"{len(mismatch)} rows whose status disagrees with the ledger: {mismatch[:5]}")
        if lost:
            res.add("ledger", f"{len(lost)} recipients SENT in the ledger but never delivered: {lost[:6]}")

        # Must not send (I1): drafts never published, after a retract, before the send time.
        early: list[str] = []
        for row in rows:
            nid = row["id"]
            info = self.rows[nid]
            copies = [e for rid in info.recipients for e in by_tx.get(transaction_id_for(nid, rid), [])]
            if not copies:
                continue
            if info.draft and row["publish_status"] != "PUBLISH":
                early.append(f"{nid}: delivered while never published")
            retracted = self.retracted_at.get(nid)
            if retracted is not None:
                late = [e for e in copies if _parse_ts(e["receivedAt"]) > retracted + grace]
                if late:
                    early.append(f"{nid}: {len(late)} deliveries after its retract")
            if info.scheduled_for is not None:
                first = min(_parse_ts(e["receivedAt"]) for e in copies)
                if first < info.scheduled_for - timedelta(seconds=0.5):
                    early.append(f"{nid}: delivered {(info.scheduled_for - first).total_seconds():.1f} s early")
        if early:
            res.add("must_not_send", f"{len(early)} rows sent when they must not be: {early[:5]}")
        if not drained and not unsettled:
            res.add("error", "drain timed out")


def _parse_ts(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


HISTORY_SQL = """
INSERT INTO notify.ent_notification
  (name, publish_status, notification_workflow_id, payload, recipients, notification_status, processed_at, attempts)
SELECT 'soak-history', 'PUBLISH', $1, '{}'::jsonb, ARRAY[gen_random_uuid()], 'SENT', now(), 1
FROM generate_series(1, $2::int)
"""

DUE_SQL = """
SELECT
  count(*) FILTER (WHERE
      (n.notification_status = 'PENDING' AND n.publish_status = 'PUBLISH' AND n.deactivated IS NOT TRUE
       AND (n.scheduled_for IS NULL OR n.scheduled_for <= now())
       AND (n.next_attempt_at IS NULL OR n.next_attempt_at <= now())
       AND w.publish_status NOT IN ('DRAFT', 'NONE') AND w.deactivated IS NOT TRUE)
   OR (n.notification_status = 'FAILED' AND n.dead_lettered_at IS NULL AND n.next_attempt_at <= now())
   OR (n.notification_status = 'PROCESSING' AND (n.scheduled_for IS NULL OR n.scheduled_for <= now()))) AS due,
  count(*) FILTER (WHERE n.notification_status IN ('SENT', 'RETRACTED')
                   OR (n.notification_status = 'FAILED' AND n.dead_lettered_at IS NOT NULL)) AS finished,
  (SELECT json_object_agg(s, c) FROM (SELECT notification_status::text s, count(*) c FROM notify.ent_notification
                                       WHERE id = ANY($1::bigint[]) GROUP BY 1) x)::text AS statuses
FROM notify.ent_notification n JOIN notify.ent_notification_workflow w ON w.id = n.notification_workflow_id
WHERE n.id = ANY($1::bigint[])
"""

ROWS_SQL = """
SELECT n.id, n.notification_status::text AS status, n.publish_status::text AS publish_status, n.deactivated,
       n.scheduled_for, n.dead_lettered_at IS NOT NULL AS dead, n.attempts, n.error_details->>'error' AS error,
       w.publish_status::text AS wf_publish_status, w.deactivated AS wf_deactivated, now() AS now
FROM notify.ent_notification n JOIN notify.ent_notification_workflow w ON w.id = n.notification_workflow_id
WHERE n.id = ANY($1::bigint[])
ORDER BY n.id
"""

LEDGER_SQL = """
SELECT notification_id, recipient_id::text AS recipient_id, status, attempts, last_http_status, last_error
FROM notify.ent_notification_delivery WHERE notification_id = ANY($1::bigint[])
"""


def start_pooler(stack: Any, seeds: list[int], minutes: float, say: Callable[[str], None]) -> PgBouncer | None:
    """pgbouncer in front of the stack's Postgres when a seed's plan puts its workers behind the transaction pooler
    and pgbouncer is installed (those seeds connect directly otherwise, and say so in their notes)."""
    if not any(make_plan(seed, minutes).pooler for seed in seeds):
        return None
    executable = pgbouncer_binary()
    if executable is None:
        say("pgbouncer is not installed: seeds planned behind the pooler connect directly")
        return None
    return start_pgbouncer(stack.admin_url, executable, pool_size=8)


async def run_seed(
    stack: Any,
    seed: int,
    minutes: float,
    *,
    say: Callable[[str], None] = lambda _: None,
    pgbouncer: Any = None,
) -> SoakResult:
    """One seed on `stack` (a started FaultStack): fresh database and namespace, the plan, the checks."""
    plan = make_plan(seed, minutes)
    soak = Soak(stack, plan, say=say, pgbouncer=pgbouncer if plan.pooler else None)
    res = soak.result
    if plan.pooler and pgbouncer is None:
        res.notes["pooler"] = "planned but pgbouncer is not installed: workers connect directly"
    started = time.monotonic()
    stop = asyncio.Event()
    watcher: asyncio.Task[None] | None = None
    try:
        await soak.prepare()
        soak.t0 = time.monotonic()
        soak.log(plan.summary())
        await asyncio.gather(*(soak.start_slot(s) for s in range(plan.workers)))
        soak.t0 = time.monotonic()
        watcher = asyncio.create_task(soak.watch(stop))
        await asyncio.gather(soak.load(), soak.faults(), asyncio.sleep(plan.load_s))
        soak.log("load phase over: faults off, every worker running")
        await soak.heal()
        remaining = plan.recipients / plan.rps
        drain_s = max(60.0, remaining * 1.5 + 2 * plan.lease_ms / 1000 + 30)
        drained = await soak.drain(drain_s)
        soak.log(f"{'drained' if drained else 'drain timed out'}; settling {SETTLE_S:g} s")
        await asyncio.sleep(SETTLE_S)
        stop.set()
        await watcher
        await soak.final_checks(drained)
    except Exception as exc:
        res.add("error", f"harness: {type(exc).__name__}: {exc}")
        soak.log(f"error: {type(exc).__name__}: {exc}")
    finally:
        stop.set()
        if watcher is not None and not watcher.done():
            watcher.cancel()
        for task in soak.background:
            task.cancel()
        for slot in list(soak.stopped):
            child = soak.slots.get(slot)
            if child is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.pid, signal.SIGCONT)
        soak.workers = [c for c in soak.workers if c.alive]
        await asyncio.to_thread(soak.stop_workers)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(soak.retire_namespace(), 60)
        if soak.pool is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(soak.pool.close(), 10)
    res.duration_s = time.monotonic() - started
    res.notes["logs"] = str(soak.dir)
    res.notes["database"] = f"soak_{soak.tag}"
    return res


__all__ = ["Finding", "SoakResult", "make_plan", "reproduce_command", "run_seed", "start_pooler"]
