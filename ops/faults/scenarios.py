"""Fault scenarios for xnovu: a fresh embedded stack, real worker subprocesses, one fault each, then the invariants.

Used by `ops/faults/run.py` (the suite, one command) and by `tests/faults/test_faults.py` (the same scenarios,
smaller, under pytest -m slow). Not part of the `xnovu` package: it is operational tooling, loaded from its path.

    FaultStack      the local stack (xnovu/devtools/stack.py) with all three parts, and the emulator's control API
    Scenario        name, description and an async `fault(ctx)` that injects one fault while the rows drain
    ScenarioRun     one scenario on a fresh database and namespace: N rows, worker subprocesses, measurements
    ScenarioResult  sent / failed / lost / duplicates / stuck / duration, and whether every target was met

What is measured (I2, I3 of docs/design.md "The invariants"):

- lost: a recipient that never reached the emulator although its row is not FAILED (a row marked SENT without
  every delivery loses the missing ones);
- duplicates: the emulator's `duplicate_deliveries`, and independently the number of extra (subscriberId,
  transactionId) pairs in /emulator/events;
- stuck: rows still PENDING or PROCESSING when the scenario ends.

A row is terminal when it is SENT or dead-lettered (FAILED with dead_lettered_at). A FAILED row waiting for its
next attempt is still in flight: the wait goes on until it is retried (it is counted as failed only at a timeout).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from temporalio.client import Client

from xnovu.config import Settings
from xnovu.db.migrate import migrate
from xnovu.db.repository import NewNotification, connect, insert_notifications, upsert_workflow
from xnovu.devtools.stack import ChildProcess, EmbeddedPostgres, LocalStack, TemporalDevServer, clean_environ, free_port

log = logging.getLogger("xnovu.faults")

#: Worker settings of every scenario (short intervals so recovery is visible within a minute).
WORKER_SETTINGS: dict[str, str] = {
    "POLL_INTERVAL_MS": "1000",
    "FAILED_POLL_INTERVAL_MS": "1000",
    "SCHEDULED_POLL_INTERVAL_MS": "1000",
    "PROCESSING_LEASE_MS": "10000",
    "RETRY_BACKOFF_BASE_MS": "500",
    "RETRY_BACKOFF_MAX_MS": "2000",
    "MAX_ATTEMPTS": "50",
    "NOVU_RATE_LIMIT_RPS": "100000",
    "NOVU_TIMEOUT_MS": "2000",
    "WORKER_HEALTH_HOST": "127.0.0.1",
    "WORKER_LOG_LEVEL": "info",
    "WORKER_LOG_FORMAT": "json",
}
WORKFLOW_KEY = "fault-welcome"
#: After every row is terminal, keep watching this long so a late duplicate (a zombie attempt) is still seen.
SETTLE_S = 3.0


# -- the stack -------------------------------------------------------------------------------------------------


class FaultStack(LocalStack):
    """The local stack with all three parts (xnovu/devtools/stack.py), the emulator as a subprocess, plus the
    helpers the scenarios use: a migrated database per scenario and the emulator's control API."""

    def __init__(self, base: Path) -> None:
        super().__init__(Settings.model_construct(), base, namespace="default")

    @property
    def secret(self) -> str:
        return self.secret_key

    @property
    def started_postgres(self) -> EmbeddedPostgres:
        assert self.postgres is not None
        return self.postgres

    @property
    def started_temporal(self) -> TemporalDevServer:
        assert self.temporal is not None
        return self.temporal

    async def new_database(self, name: str) -> str:
        conn = await asyncpg.connect(self.admin_url)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        url = self.database_url(name)
        conn = await asyncpg.connect(url)
        try:
            await migrate(conn)
        finally:
            await conn.close()
        return url

    # -- the emulator's control API

    async def emulator_get(self, path: str) -> Any:
        async with httpx.AsyncClient(base_url=self.emulator_url, timeout=30) as http:
            response = await http.get(path)
            response.raise_for_status()
            return response.json()

    async def emulator_post(self, path: str, body: dict[str, Any]) -> Any:
        async with httpx.AsyncClient(base_url=self.emulator_url, timeout=30) as http:
            response = await http.post(path, json=body)
            response.raise_for_status()
            return response.json()

    async def configure_emulator(self, **changes: Any) -> None:
        await self.emulator_post("/emulator/config", changes)

    async def deliveries(self) -> int:
        return int((await self.emulator_get("/emulator/stats"))["deliveries"])


# -- one scenario ----------------------------------------------------------------------------------------------


@dataclass
class ScenarioResult:
    name: str
    description: str
    n: int
    sent: int = 0
    failed: int = 0
    lost: int = 0
    duplicates: int = 0
    """The emulator's duplicate_deliveries."""
    duplicate_events: int = 0
    """Extra (subscriberId, transactionId) pairs in /emulator/events (counted independently)."""
    stuck: int = 0
    duration_s: float = 0.0
    timed_out: bool = False
    error: str | None = None
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return (
            self.error is None
            and not self.timed_out
            and self.lost == 0
            and self.duplicates == 0
            and self.duplicate_events == 0
            and self.stuck == 0
            and self.sent + self.failed == self.n
        )

    def misses(self) -> list[str]:
        """Readable reasons for a failed scenario."""
        out = []
        if self.error:
            out.append(f"error: {self.error}")
        if self.timed_out:
            out.append("not every row was terminal before the timeout")
        if self.lost:
            out.append(f"{self.lost} lost")
        if self.duplicates or self.duplicate_events:
            out.append(f"{max(self.duplicates, self.duplicate_events)} duplicate deliveries")
        if self.stuck:
            out.append(f"{self.stuck} stuck")
        return out

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {"ok": self.ok}


class ScenarioRun:
    """The world of one scenario: its database, namespace, rows and worker subprocesses."""

    def __init__(
        self,
        stack: FaultStack,
        name: str,
        n: int,
        *,
        timeout_s: float,
        say: Callable[[str], None],
        recipients_per_row: int = 1,
    ) -> None:
        self.stack = stack
        self.name = name
        self.n = n
        self.recipients_per_row = recipients_per_row
        self.timeout_s = timeout_s
        self.say = say
        tag = uuid.uuid4().hex[:6]
        self.tag = f"{name}_{tag}"
        self.dir = stack.base / f"scenario-{self.tag}"
        self.namespace = f"faults-{name}-{tag}"
        self.task_queue = f"faults-{name}-{tag}"
        self.database_url = ""
        self.workers: list[ChildProcess] = []
        self.worker_ports: dict[str, int] = {}
        self.ids: list[int] = []
        self.recipients: dict[int, list[str]] = {}

    # -- set-up

    async def prepare(self) -> None:
        """A fresh database (migrated), a clean emulator, one published workflow and N rows in one transaction."""
        self.dir.mkdir(parents=True, exist_ok=True)
        self.database_url = await self.stack.new_database(f"faults_{self.tag}")
        await self.stack.emulator_post("/emulator/reset", {"config": True})
        settings = Settings(_env_file=None, database_url=self.database_url)  # type: ignore[call-arg]
        repo = await connect(settings)
        try:
            wf = await upsert_workflow(repo, WORKFLOW_KEY)
            rows = [
                NewNotification(f"fault-{i}", [str(uuid.uuid4()) for _ in range(self.recipients_per_row)], {"i": i})
                for i in range(self.n)
            ]
            self.ids = await insert_notifications(repo, wf, rows)
        finally:
            await repo.close()
        self.recipients = {nid: list(row.recipients) for nid, row in zip(self.ids, rows, strict=True)}

    def worker_env(self, name: str, **overrides: Any) -> dict[str, str]:
        port = free_port()
        self.worker_ports[name] = port
        env = clean_environ() | {
            "DATABASE_URL": self.database_url,
            "TEMPORAL_ADDRESS": self.stack.started_temporal.address,
            "TEMPORAL_NAMESPACE": self.namespace,
            "TEMPORAL_TASK_QUEUE": self.task_queue,
            "NOVU_API_URL": self.stack.emulator_url,
            "NOVU_SECRET_KEY": self.stack.secret,
            "WORKER_HEALTH_PORT": str(port),
            "WORKER_PID_FILE": str(self.dir / f"{name}.pid"),
            **WORKER_SETTINGS,
        }
        env.update({k.upper(): str(v) for k, v in overrides.items()})
        return env

    async def start_worker(self, name: str, *, wait_healthy: bool = True, **overrides: Any) -> ChildProcess:
        """`python -m xnovu worker start` as a subprocess; returns once its /health answers 200."""
        child = ChildProcess.spawn(
            name, ["-m", "xnovu", "worker", "start"], self.worker_env(name, **overrides), self.dir
        )
        self.workers.append(child)
        self.say(f"started {name} (pid {child.pid})")
        if wait_healthy:
            await self.wait_healthy(name, child)
        return child

    async def wait_healthy(self, name: str, child: ChildProcess, timeout_s: float = 90.0) -> None:
        await child.wait_healthy(f"http://127.0.0.1:{self.worker_ports[name]}/health", timeout_s)

    async def wait_delivered(self, fraction: float, timeout_s: float = 120.0) -> int:
        """Until the emulator has accepted at least `fraction` of the recipients; returns the count."""
        target = max(1, int(self.n * self.recipients_per_row * fraction))
        deadline = time.monotonic() + timeout_s
        while True:
            done = await self.stack.deliveries()
            if done >= target:
                return done
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {done} of {target} deliveries after {timeout_s:.0f} s")
            for w in self.workers:
                if not w.alive and w.process.returncode != -signal.SIGKILL:
                    raise RuntimeError(f"{w.name} exited with code {w.process.returncode}: {w.tail()}")
            await asyncio.sleep(0.1)

    # -- measuring

    async def states(self) -> list[asyncpg.Record] | None:
        """Every row's status, through a fresh connection (the server may be restarting); None if unreachable."""
        try:
            conn = await asyncio.wait_for(asyncpg.connect(self.database_url), 5)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
            return None
        try:
            return await conn.fetch(
                "SELECT id, notification_status::text AS status, dead_lettered_at IS NOT NULL AS dead, attempts "
                "FROM notify.ent_notification WHERE id = ANY($1::bigint[])",
                self.ids,
            )
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            return None
        finally:
            with contextlib.suppress(Exception):
                await conn.close()

    @staticmethod
    def terminal(rows: Sequence[asyncpg.Record]) -> bool:
        return all(r["status"] == "SENT" or (r["status"] == "FAILED" and r["dead"]) for r in rows)

    async def wait_terminal(self, deadline: float) -> bool:
        while time.monotonic() < deadline:
            rows = await self.states()
            if rows is not None and len(rows) == self.n and self.terminal(rows):
                return True
            await asyncio.sleep(0.5)
        return False

    async def measure(self, result: ScenarioResult) -> None:
        rows = await self.states()
        for _ in range(20):
            if rows is not None:
                break
            await asyncio.sleep(1)
            rows = await self.states()
        if rows is None:
            raise RuntimeError("the database does not answer, so the rows cannot be checked")
        events = await self.stack.emulator_get("/emulator/events")
        stats = await self.stack.emulator_get("/emulator/stats")
        # Kept for the investigation of a failed scenario (the emulator is reset by the next one).
        (self.dir / "emulator-events.json").write_text(json.dumps(events))
        (self.dir / "emulator-stats.json").write_text(json.dumps(stats))
        delivered = {e["subscriberId"] for e in events}
        pairs = Counter((e["subscriberId"], e["transactionId"]) for e in events)
        status = Counter(r["status"] for r in rows)
        result.sent = status["SENT"]
        result.failed = status["FAILED"]
        result.stuck = status["PENDING"] + status["PROCESSING"]
        result.lost = sum(
            1
            for r in rows
            if r["status"] != "FAILED"
            for recipient in self.recipients[r["id"]]
            if recipient not in delivered
        )
        result.duplicates = int(stats["duplicate_deliveries"])
        result.duplicate_events = sum(c - 1 for c in pairs.values())
        retried = [r["attempts"] for r in rows if r["attempts"] > 1]
        result.notes.update(
            deliveries=len(events),
            requests=stats["requests"],
            status_codes=stats["status_codes"],
            rows_retried=len(retried),
            max_attempts=max((r["attempts"] for r in rows), default=0),
            statuses=dict(status),
        )

    async def retire_namespace(self) -> None:
        """Delete the scenario's schedules and end its open workflows, so later scenarios get the server to
        themselves (schedules firing every second in finished namespaces slow the dev server down)."""
        client = await Client.connect(self.stack.started_temporal.address, namespace=self.namespace)
        for kind in ("new", "failed", "scheduled"):
            with contextlib.suppress(Exception):
                await client.get_schedule_handle(f"xnovu-poll-{kind}").delete()
        async for wf in client.list_workflows('ExecutionStatus="Running"'):
            with contextlib.suppress(Exception):
                await client.get_workflow_handle(wf.id, run_id=wf.run_id).terminate("fault scenario finished")

    def stop_workers(self) -> None:
        for w in self.workers:
            try:
                w.stop(signal.SIGTERM, 40.0)
            except Exception:
                log.exception("stopping %s failed", w.name)


# -- the scenarios ---------------------------------------------------------------------------------------------

Fault = Callable[[ScenarioRun], Awaitable[None]]


@dataclass(frozen=True)
class Scenario:
    key: str
    name: str
    description: str
    fault: Fault
    rows: int | None = None
    """Rows of this scenario (None: the suite's N)."""
    recipients: int = 1
    """Recipients of each row."""


async def _kill_then_replace(run: ScenarioRun) -> None:
    first = await run.start_worker("worker-1")
    done = await run.wait_delivered(0.3)
    first.kill()
    run.say(f"SIGKILLed worker-1 at {done} deliveries; starting worker-2")
    await run.start_worker("worker-2")


async def _two_workers_one_killed(run: ScenarioRun) -> None:
    first = await run.start_worker("worker-1")
    await run.start_worker("worker-2")
    done = await run.wait_delivered(0.3)
    first.kill()
    run.say(f"SIGKILLed worker-1 at {done} deliveries; worker-2 carries on")


async def _flaky_novu(run: ScenarioRun) -> None:
    await run.stack.configure_emulator(error_rate=0.2, timeout_rate=0.1, timeout_delay_s=3.0, seed=11)
    await run.start_worker("worker-1")
    done = await run.wait_delivered(0.2)
    await run.stack.configure_emulator(rate_limit_rps=20)
    run.say(f"429 storm on (rate_limit_rps=20) at {done} deliveries")
    await asyncio.sleep(10)
    await run.stack.configure_emulator(rate_limit_rps=None)
    run.say("429 storm off (5xx and timeouts go on)")


async def _postgres_restart(run: ScenarioRun) -> None:
    await run.start_worker("worker-1")
    done = await run.wait_delivered(0.3)
    try:
        await asyncio.to_thread(run.stack.started_postgres.stop)
        run.say(f"Postgres stopped at {done} deliveries")
        await asyncio.sleep(3)
    finally:
        await asyncio.to_thread(run.stack.started_postgres.restart)
    run.say("Postgres restarted")


async def _temporal_restart(run: ScenarioRun) -> None:
    await run.start_worker("worker-1")
    done = await run.wait_delivered(0.3)
    started = time.monotonic()
    try:
        await asyncio.to_thread(run.stack.started_temporal.stop)
        run.say(f"Temporal dev server stopped at {done} deliveries")
    finally:
        await asyncio.to_thread(run.stack.started_temporal.start)
    run.say(f"Temporal dev server restarted on the same file and port ({time.monotonic() - started:.1f} s)")


async def _kill_mid_heavy_notification(run: ScenarioRun) -> None:
    # A slower Novu and a budget of 2 000 tokens/s make the 5 000 recipients take a few seconds: long enough to
    # kill the worker with part of them acknowledged and requests in flight.
    await run.stack.configure_emulator(latency_ms=150)
    first = await run.start_worker("worker-1", novu_rate_limit_rps=2000)
    done = await run.wait_delivered(0.3)
    first.kill()
    run.say(f"SIGKILLed worker-1 at {done} of {run.recipients_per_row} recipients; starting worker-2")
    await run.start_worker("worker-2", novu_rate_limit_rps=2000)


async def _late_answers_idempotency_off(run: ScenarioRun) -> None:
    # Novu Cloud's default: the Idempotency-Key is ignored, so only the activity-feed look-up keeps a request whose
    # answer came too late from being delivered twice (docs/novu-contract.md "Unknown outcomes").
    await run.stack.configure_emulator(idempotency=False, timeout_rate=0.1, timeout_delay_s=3.0, seed=16)
    await run.start_worker("worker-1")


async def _kill_mid_heavy_notification_idempotency_off(run: ScenarioRun) -> None:
    await run.stack.configure_emulator(idempotency=False)
    await _kill_mid_heavy_notification(run)


SCENARIOS: dict[str, Scenario] = {
    s.key: s
    for s in (
        Scenario("a", "worker-sigkill", "SIGKILL the worker at ~30% sent, then start a new one", _kill_then_replace),
        Scenario("b", "two-workers-one-killed", "two workers, one SIGKILLed at ~30% sent", _two_workers_one_killed),
        Scenario(
            "c",
            "flaky-novu",
            "20% 5xx + 10% timeouts (3 s > 2 s client timeout) and a 10 s 429 storm at 20 rps",
            _flaky_novu,
        ),
        Scenario("d", "postgres-restart", "Postgres stopped for 3 s at ~30% sent, then restarted", _postgres_restart),
        Scenario(
            "e", "temporal-restart", "Temporal dev server stopped and started again at ~30% sent", _temporal_restart
        ),
        Scenario(
            "f",
            "worker-sigkill-heavy",
            "SIGKILL the worker in the middle of one 5 000-recipient notification, then start a new one",
            _kill_mid_heavy_notification,
            rows=1,
            recipients=5_000,
        ),
        Scenario(
            "g",
            "late-answers-idempotency-off",
            "Novu's idempotency off; 10% of requests processed but answered after the client's timeout",
            _late_answers_idempotency_off,
        ),
        Scenario(
            "h",
            "worker-sigkill-heavy-idempotency-off",
            "as worker-sigkill-heavy, with Novu's idempotency off (requests cut off in flight are looked up)",
            _kill_mid_heavy_notification_idempotency_off,
            rows=1,
            recipients=5_000,
        ),
    )
}


async def run_scenario(
    stack: FaultStack,
    scenario: Scenario,
    n: int,
    *,
    timeout_s: float = 180.0,
    say: Callable[[str], None] = lambda _: None,
) -> ScenarioResult:
    """One scenario on a fresh database and namespace; never raises for a product failure (it is in the result)."""

    def tagged(msg: str) -> None:
        say(f"[{scenario.key}] {msg}")

    n = scenario.rows or n
    result = ScenarioResult(scenario.name, scenario.description, n)
    run = ScenarioRun(
        stack, scenario.name, n, timeout_s=timeout_s, say=tagged, recipients_per_row=scenario.recipients
    )
    started = time.monotonic()
    try:
        await run.prepare()
        tagged(f"{n} rows inserted in database faults_{run.tag}, namespace {run.namespace}")
        started = time.monotonic()
        deadline = started + timeout_s
        await asyncio.wait_for(scenario.fault(run), timeout_s)
        result.timed_out = not await run.wait_terminal(deadline)
        result.duration_s = round(time.monotonic() - started, 1)
        tagged(f"{'timed out' if result.timed_out else 'every row terminal'} after {result.duration_s} s")
        await asyncio.sleep(SETTLE_S)
        await run.measure(result)
    except Exception as exc:
        result.error = f"{type(exc).__name__}: {exc}"
        result.duration_s = round(time.monotonic() - started, 1)
        tagged(f"error: {result.error}")
        with contextlib.suppress(Exception):
            await run.measure(result)
    finally:
        await asyncio.to_thread(run.stop_workers)
        try:
            await asyncio.wait_for(run.retire_namespace(), 60)
        except Exception as exc:
            tagged(f"could not retire namespace {run.namespace}: {type(exc).__name__}: {exc}")
    result.notes["logs"] = str(run.dir)
    result.notes["namespace"] = run.namespace
    result.notes["database"] = f"faults_{run.tag}"
    return result
