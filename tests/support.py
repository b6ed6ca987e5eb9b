"""Shared test helpers: the embedded stack, per-test environments, waiting, and row factories."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import httpx

from xnovu.config import Settings
from xnovu.db.repository import NewNotification, Repository, connect, insert_notifications, upsert_workflow
from xnovu.devtools.emulator import EmulatorServer
from xnovu.devtools.pgbouncer import PgBouncer
from xnovu.devtools.pgbouncer import pgbouncer_binary as pgbouncer_binary  # used by tests/integration/test_pooler.py
from xnovu.devtools.pgbouncer import start_pgbouncer as _start_pgbouncer
from xnovu.devtools.stack import EmbeddedPostgres, LocalStack, TemporalDevServer, free_port
from xnovu.service.processor import NotificationProcessor
from xnovu.worker.composition import build_processor, novu_client
from xnovu.worker.manager import WorkerManager

T = TypeVar("T")

#: Recognisable fake secrets: tests assert they never show up in logs, errors, /status or workflow inputs (I6).
NOVU_SECRET = "nv-secret-SHOULD-NEVER-APPEAR-7f3a"
DB_PASSWORD = "pg-password-SHOULD-NEVER-APPEAR-91c2"


@dataclass
class Stack:
    """The session's local stack (xnovu/devtools/stack.py) with all three parts, the emulator in this process."""

    base: Path
    local: LocalStack
    admin_url: str
    counter: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    ready_namespace: str | None = None

    async def take_namespace(self) -> str:
        """A Temporal namespace of its own for one test, registered one test ahead.

        A new namespace answers only once the server's namespace cache has refreshed (about 1.3 s on this server),
        which every test's first worker start waited out; registered while the previous test ran, it is ready when
        its own test starts. A test that needs bootstrap to create its namespace is marked `fresh_namespace`.
        """
        namespace, self.ready_namespace = self.ready_namespace, None  # two environments at once never share one
        namespace = namespace or await self._register_namespace()
        self.ready_namespace = await self._register_namespace()
        return namespace

    async def _register_namespace(self) -> str:
        from google.protobuf.duration_pb2 import Duration
        from temporalio.api.workflowservice.v1 import RegisterNamespaceRequest
        from temporalio.client import Client

        name = f"test-{uuid.uuid4().hex[:8]}"
        days = Settings.model_fields["temporal_namespace_retention_days"].default
        client = await Client.connect(self.temporal.address, namespace="default")
        retention = Duration(seconds=days * 86_400)
        await client.workflow_service.register_namespace(
            RegisterNamespaceRequest(namespace=name, workflow_execution_retention_period=retention)
        )
        return name

    @property
    def postgres(self) -> EmbeddedPostgres:
        assert self.local.postgres is not None
        return self.local.postgres

    @property
    def temporal(self) -> TemporalDevServer:
        assert self.local.temporal is not None
        return self.local.temporal

    @property
    def emulator(self) -> EmulatorServer:
        assert self.local.emulator_server is not None
        return self.local.emulator_server

    def database_url(self, name: str) -> str:
        """URL of a database on the embedded server, carrying a fake password (trust auth ignores it) for I6 tests."""
        return self.local.database_url(name).replace("postgres:@", f"postgres:{DB_PASSWORD}@", 1)

    def stop(self) -> None:
        self.local.stop()


async def eventually(check: Callable[[], Awaitable[T]], timeout: float = 30.0, interval: float = 0.2) -> T:
    """Poll `check` until it returns a truthy value (returned) or time runs out (AssertionError with the last value)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = await check()
        except AssertionError as exc:
            last = exc
        else:
            if last:
                return last
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s; last value: {last!r}")
        await asyncio.sleep(interval)


@dataclass
class Env:
    """A per-test world: its own database (cloned from a migrated template), namespace and task queue."""

    settings: Settings
    repo: Repository
    emulator: EmulatorServer
    stack: Stack

    @property
    def emu(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.emulator.url, timeout=10)

    def deliveries(self) -> list[dict[str, Any]]:
        return list(self.emulator.emulator.events)

    def stats(self) -> dict[str, Any]:
        return self.emulator.emulator.stats()

    def configure_emulator(self, **changes: Any) -> None:
        self.emulator.emulator.configure(changes)

    async def workflow(self, key: str = "welcome", **kw: Any) -> int:
        return await upsert_workflow(self.repo, key, **kw)

    async def insert(
        self,
        workflow_id: int,
        n: int = 1,
        *,
        recipients: int = 1,
        publish_status: str = "PUBLISH",
        scheduled_for: datetime | None = None,
        payload: dict[str, Any] | None = None,
    ) -> list[int]:
        rows = [
            NewNotification(
                f"n{i}",
                [str(uuid.uuid4()) for _ in range(recipients)],
                payload or {"i": i},
                publish_status=publish_status,
                scheduled_for=scheduled_for,
            )
            for i in range(n)
        ]
        return await insert_notifications(self.repo, workflow_id, rows)

    async def row(self, notification_id: int) -> dict[str, Any]:
        r = await self.repo.pool.fetchrow(
            "SELECT *, notification_status::text AS status FROM notify.ent_notification WHERE id = $1", notification_id
        )
        assert r is not None
        return dict(r)

    async def statuses(self, ids: list[int]) -> dict[int, str]:
        rows = await self.repo.pool.fetch(
            "SELECT id, notification_status::text AS s FROM notify.ent_notification WHERE id = ANY($1::bigint[])", ids
        )
        return {r["id"]: r["s"] for r in rows}

    async def all_in(self, ids: list[int], *states: str) -> bool:
        got = await self.statuses(ids)
        return len(got) == len(ids) and all(s in states for s in got.values())

    async def execute(self, sql: str, *args: Any) -> None:
        await self.repo.pool.execute(sql, *args)

    @asynccontextmanager
    async def worker(self, **overrides: Any) -> AsyncIterator[WorkerManager]:
        """A running WorkerManager (health on a random port) for this environment."""
        manager = WorkerManager(self.settings.model_copy(update=overrides) if overrides else self.settings)
        await manager.start()
        try:
            yield manager
        finally:
            await manager.stop()


def start_stack(base: Path) -> Stack:
    """Postgres with a migrated template database, Temporal and the emulator (in this process, so tests can read
    and configure it directly)."""
    local = LocalStack.everything(base, namespace="default", emulator_in_process=True, default_secret_key=NOVU_SECRET)
    local.start()
    stack = Stack(base, local, local.admin_url)
    try:
        asyncio.run(_make_template(stack))
    except BaseException:
        stack.stop()
        raise
    return stack


def _free_port() -> int:
    return free_port()


TEMPLATE_DB = "xnovu_template"


async def _make_template(stack: Stack) -> None:
    from xnovu.db.migrate import migrate

    conn = await asyncpg.connect(stack.admin_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{TEMPLATE_DB}"')
        await conn.execute(f'CREATE DATABASE "{TEMPLATE_DB}"')
    finally:
        await conn.close()
    conn = await asyncpg.connect(stack.database_url(TEMPLATE_DB))
    try:
        await migrate(conn)
    finally:
        await conn.close()


async def new_database(stack: Stack, name: str) -> str:
    conn = await asyncpg.connect(stack.admin_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{TEMPLATE_DB}"')
    finally:
        await conn.close()
    return stack.database_url(name)


async def empty_database(stack: Stack, name: str) -> str:
    """A database with nothing of xnovu in it (not cloned from the migrated template), e.g. to load a foreign schema."""
    conn = await asyncpg.connect(stack.admin_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return stack.database_url(name)


#: The original xnovu Supabase schema, as a live database has it before xnovu's migrations ran.
ORIGINAL_SCHEMA = Path(__file__).parent / "fixtures" / "original_schema.sql"


async def original_database(stack: Stack) -> str:
    """A fresh database holding the original xnovu schema (no xnovu migration applied); returns its URL."""
    url = await empty_database(stack, f"orig{next(stack.counter)}_{uuid.uuid4().hex[:6]}")
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(ORIGINAL_SCHEMA.read_text(encoding="utf-8"))
    finally:
        await conn.close()
    return url


def test_settings(stack: Stack, database_url: str, **overrides: Any) -> Settings:
    """Fast intervals, a fresh namespace and task queue; nothing read from the developer's .env."""
    tag = uuid.uuid4().hex[:8]
    values: dict[str, Any] = {
        "database_url": database_url,
        "temporal_address": stack.temporal.address,
        "temporal_namespace": f"test-{tag}",
        "temporal_task_queue": f"tq-{tag}",
        "novu_api_url": stack.emulator.url,
        "novu_secret_key": NOVU_SECRET,
        "novu_rate_limit_rps": 10_000,
        "novu_timeout_ms": 2_000,
        "novu_outcome_settle_ms": 200,
        "poll_interval_ms": 1_000,
        "failed_poll_interval_ms": 1_000,
        "scheduled_poll_interval_ms": 1_000,
        "retry_backoff_base_ms": 200,
        "retry_backoff_max_ms": 1_000,
        "worker_health_port": 0,
        "worker_health_host": "127.0.0.1",
        "worker_pid_file": stack.base / f"worker-{tag}.pid",
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@asynccontextmanager
async def environment(stack: Stack, *, fresh_namespace: bool = False, **overrides: Any) -> AsyncIterator[Env]:
    """A database cloned from the migrated template, a namespace registered ahead (`Stack.take_namespace`; with
    `fresh_namespace` one nobody registered yet) and a task queue of its own."""
    if not fresh_namespace and "temporal_namespace" not in overrides:
        overrides["temporal_namespace"] = await stack.take_namespace()
    name = f"t{next(stack.counter)}_{uuid.uuid4().hex[:6]}"
    url = await new_database(stack, name)
    settings = test_settings(stack, url, **overrides)
    stack.emulator.emulator.reset(config=True)
    repo = await connect(settings)
    try:
        yield Env(settings, repo, stack.emulator, stack)
    finally:
        await repo.close()
        await _delete_schedules(settings)


async def _delete_schedules(settings: Settings) -> None:
    """Delete the schedules a test's worker created in the test's namespace.

    Left behind, every test's 1 s poll schedules keep ticking on the session's one Temporal server, so its internal
    scheduler falls further behind with each test: late in the suite a pause took more than 10 s to show (the pause
    test failed there and nowhere else).
    """
    from temporalio.client import Client
    from temporalio.service import RPCError

    try:
        client = await Client.connect(settings.temporal_address, namespace=settings.temporal_namespace)
        ids = [s.id async for s in await client.list_schedules()]
    except RPCError:
        return  # the test never created its namespace
    for sid in ids:
        with contextlib.suppress(RPCError):
            await client.get_schedule_handle(sid).delete()


@asynccontextmanager
async def processor_for(env: Env, **overrides: Any) -> AsyncIterator[NotificationProcessor]:
    """The trigger core on this environment's database and Novu (no Temporal); `overrides` change settings."""
    settings = env.settings.model_copy(update=overrides) if overrides else env.settings
    client = novu_client(settings)
    try:
        yield build_processor(settings, env.repo, client)
    finally:
        await client.aclose()


# -- a real transaction pooler ------------------------------------------------------------------------------------


def start_pgbouncer(stack: Stack, executable: str, *, pool_size: int = 4) -> PgBouncer:
    """pgbouncer (xnovu/devtools/pgbouncer.py) in front of the session's embedded Postgres, with the stack's fake
    password in its URLs."""
    return _start_pgbouncer(stack.admin_url, executable, pool_size=pool_size, password=DB_PASSWORD)
