"""xnovu through a real transaction pooler: pgbouncer (`pool_mode = transaction`) in front of the embedded Postgres.

DATABASE_URL carries `?pgbouncer=true`, the form the README documents for Supabase's transaction pooler: the flag turns
the statement cache off and must never reach the server as a startup parameter. pgbouncer comes from the system
packages (`apt-get install pgbouncer`, which `.ci/run` does on CI); without it the pooler tests skip.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from tests.e2e.conftest import Cli
from tests.support import (
    Env,
    PgBouncer,
    Stack,
    empty_database,
    environment,
    eventually,
    pgbouncer_binary,
    start_pgbouncer,
)
from tests.support import test_settings as settings_for
from xnovu.db.fleet import fleet_status
from xnovu.db.repository import connect
from xnovu.worker.composition import fleet_scope


async def test_a_database_url_with_the_pgbouncer_flag_connects_and_keeps_the_cache_off(stack: Stack) -> None:
    """Postgres, like pgbouncer, refuses an unknown startup parameter: the flag must be stripped, not sent."""
    async with environment(stack) as env:
        url = env.settings.database_url.get_secret_value()  # type: ignore[union-attr]
        settings = settings_for(stack, url + "&pgbouncer=true")
        assert settings.statement_cache_size == 0
        repo = await connect(settings)
        try:
            await repo.ping()
        finally:
            await repo.close()


@pytest.fixture(scope="module")
def pgbouncer(stack: Stack) -> Iterator[PgBouncer]:
    executable = pgbouncer_binary()
    if executable is None:
        pytest.skip("pgbouncer is not installed (Debian/Ubuntu: apt-get install pgbouncer; .ci/run installs it)")
    bouncer = start_pgbouncer(stack, executable)
    try:
        yield bouncer
    finally:
        bouncer.stop()


@asynccontextmanager
async def pooled_environment(stack: Stack, bouncer: PgBouncer) -> AsyncIterator[Env]:
    """A fresh, empty database reached only through the pooler, with `?pgbouncer=true` in DATABASE_URL."""
    name = f"pooled_{uuid.uuid4().hex[:8]}"
    await empty_database(stack, name)
    settings = settings_for(stack, bouncer.url(name, "pgbouncer=true"))
    stack.emulator.emulator.reset(config=True)
    repo = await connect(settings)
    try:
        yield Env(settings, repo, stack.emulator, stack)
    finally:
        await repo.close()


async def test_migrate_bootstrap_doctor_and_two_workers_through_a_transaction_pooler(
    stack: Stack, pgbouncer: PgBouncer, tmp_path: Path
) -> None:
    async with pooled_environment(stack, pgbouncer) as env:
        cli = Cli(env.settings, tmp_path)
        first = (await cli("db", "migrate", timeout=120)).ok().stdout
        assert "applied" in first
        assert "up to date" in (await cli("db", "migrate")).ok().stdout
        (await cli("bootstrap")).ok()

        wf = await env.workflow("welcome")
        ids = await env.insert(wf, 20, recipients=2)
        async with env.worker(), env.worker():
            await eventually(lambda: env.all_in(ids, "SENT"), timeout=60)
            more = await env.insert(wf, 10)
            await eventually(lambda: env.all_in(more, "SENT"), timeout=60)
            # Both heartbeats go through the pooler (one statement each, no session state): both workers count.
            seen = await fleet_status(env.repo.pool, fleet_scope(env.settings))
            assert seen["workers"] == 2, seen
        assert (await fleet_status(env.repo.pool, fleet_scope(env.settings)))["workers"] == 0, "both left"
        assert env.stats()["duplicate_deliveries"] == 0
        assert len(env.deliveries()) == 20 * 2 + 10

        doctor = await cli("doctor", "--json")
        assert doctor.returncode == 0, doctor
        checks = doctor.json()
        failed = [c for c in (checks if isinstance(checks, list) else checks.get("checks", [])) if not c.get("ok")]
        assert not failed, failed
        assert "unsupported startup parameter" not in pgbouncer.log()


async def test_concurrent_migrate_runs_through_the_pooler_both_succeed(stack: Stack, pgbouncer: PgBouncer) -> None:
    """Two replicas starting at once: the migration lock must hold although the pooler moves them between backends."""
    async with pooled_environment(stack, pgbouncer) as env:
        first, second = await asyncio.gather(env.repo.migrate(), env.repo.migrate())
        assert sorted(first + second) == sorted(set(first + second))
        assert await env.repo.migrate() == []
        invalid = await env.repo.pool.fetchval("SELECT count(*) FROM pg_index WHERE NOT indisvalid")
        assert invalid == 0
