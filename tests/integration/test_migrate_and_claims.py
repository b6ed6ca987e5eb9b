"""Delivery goes on while `xnovu db migrate` builds an index on a large `notify.ent_notification` (I7, docs/design.md).

Claims and `migrate` runs take different advisory locks (the key table heads xnovu/db/queries.sql and
docs/design.md), so a claim never waits for a migration, and a claim is a short transaction, so the index build
never waits long for a claim's snapshot either.

CI runs it on XNOVU_SCALE_ROWS rows (default 200 000); `XNOVU_SCALE_ROWS=1000000` gives the issue's size.
"""

from __future__ import annotations

import asyncio
import os
import time

import pytest

from tests.support import Env
from xnovu.core.models import PollKind
from xnovu.db.repository import ClaimLimits, connect

ROWS = int(os.environ.get("XNOVU_SCALE_ROWS", "200000"))
#: I7 (docs/design.md): a migration never blocks claims for long.
MAX_CLAIM_S = 0.5
#: A claim that has not returned after this counts as blocked (and is cancelled, so the test cannot hang).
GIVE_UP_S = 5.0

#: Mostly SENT rows, one in 200 due PENDING (so claims find work), as a table in use for a while.
FILL = """
INSERT INTO notify.ent_notification
  (name, publish_status, notification_workflow_id, notification_status, payload, recipients, processed_at)
SELECT 'bulk ' || g, 'PUBLISH', $1,
       (CASE WHEN g % 200 = 0 THEN 'PENDING' ELSE 'SENT' END)::shared_types.notification_status,
       jsonb_build_object('n', g, 'text', repeat('x', 400)), ARRAY[gen_random_uuid()], now()
FROM generate_series(1, $2) AS g
"""

#: Indexes of migration 0004 (CREATE INDEX CONCURRENTLY) that the claims of the new poll do not use: the test drops
#: them and `migrate` builds them again, while those claims keep their own indexes (and so their speed).
REBUILT = ("ent_notification_xnovu_retry_idx", "ent_notification_xnovu_dlq_idx")

#: What the backend building an index is doing, sampled: a lock wait on a virtualxid is the build waiting for an
#: older transaction's snapshot (a claim's, say) to go away.
BUILD_STATE = """
SELECT wait_event_type, wait_event FROM pg_stat_activity
WHERE datname = current_database() AND state = 'active' AND query ILIKE 'CREATE INDEX CONCURRENTLY%'
"""


@pytest.mark.timeout(900)
async def test_claims_go_on_while_migrate_builds_an_index_on_a_large_table(env: Env) -> None:
    wf = await env.workflow("welcome")
    started = time.monotonic()
    await env.repo.pool.execute(FILL, wf, ROWS, timeout=900)
    await env.repo.pool.execute("VACUUM ANALYZE notify.ent_notification", timeout=900)
    print(f"\nfilled {ROWS} rows in {time.monotonic() - started:.1f} s")
    # As if 0004 had not run yet: the real `migrate` builds these indexes concurrently on the live table.
    for name in REBUILT:
        await env.execute(f"DROP INDEX notify.{name}")  # names from the fixed tuple above
    await env.execute("DELETE FROM notify.xnovu_schema_migrations WHERE version = '0004_claim_indexes'")

    migrator = await connect(env.settings)  # its own pool: the run lock is held on a second connection
    limits = ClaimLimits(max_rows=1_000_000, max_tokens=1_000_000)
    claims: list[float] = []
    claimed = 0
    waits: list[float] = []  # each continuous stretch the index build spent waiting for a snapshot
    done = asyncio.Event()

    async def claim_loop() -> None:
        nonlocal claimed
        while not done.is_set():
            t0 = time.monotonic()
            try:
                batch = await asyncio.wait_for(
                    env.repo.claim(PollKind.NEW, batch_size=5, lease_ms=600_000, limits=limits), GIVE_UP_S
                )
                claimed += len(batch.rows)
            except TimeoutError:
                pass
            claims.append(time.monotonic() - t0)
            await asyncio.sleep(0.02)

    async def watch_build() -> None:
        async with env.repo.pool.acquire() as conn:
            since: float | None = None
            while not done.is_set():
                rows = await conn.fetch(BUILD_STATE)
                waiting = any(r["wait_event"] == "virtualxid" for r in rows)
                now = time.monotonic()
                if waiting and since is None:
                    since = now
                elif not waiting and since is not None:
                    waits.append(now - since)
                    since = None
                await asyncio.sleep(0.01)
            if since is not None:
                waits.append(time.monotonic() - since)

    loops = [asyncio.create_task(claim_loop()), asyncio.create_task(watch_build())]
    try:
        await asyncio.sleep(0.3)
        started = time.monotonic()
        applied = await asyncio.wait_for(migrator.migrate(), 600)
        took = time.monotonic() - started
    finally:
        done.set()
        await asyncio.gather(*loops, return_exceptions=True)
        await migrator.close()

    print(
        f"migrate built {len(REBUILT)} indexes on {ROWS} rows in {took:.1f} s; {len(claims)} claims meanwhile "
        f"({claimed} rows), slowest {max(claims) * 1000:.0f} ms; longest snapshot wait of the build "
        f"{max(waits, default=0) * 1000:.0f} ms"
    )
    assert applied == ["0004_claim_indexes"]
    assert len(claims) >= 5, "claims ran while the indexes were built"
    assert max(claims) < MAX_CLAIM_S, f"a claim took {max(claims):.2f} s while migrate ran"
    assert claimed > 0
    assert max(waits, default=0) < 1.0, f"the index build waited {max(waits):.2f} s for a claim's snapshot"
    valid = await env.repo.pool.fetchval(
        "SELECT count(*) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
        "WHERE c.relname = ANY($1::text[]) AND i.indisvalid",
        list(REBUILT),
    )
    assert valid == len(REBUILT)
