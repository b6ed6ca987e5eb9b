"""Retention (docs/retention.md): xnovu prunes its own records of notifications that ended long ago.

What a prune removes and keeps, that it goes in short batches while claims and producers' inserts go on, that a
requeue never resends to recipients a pruned ledger forgot, the `xnovu-retention` Schedule and what `/status` shows.
Real Postgres and, for the Schedule and `/status`, a real Temporal dev server and worker.
"""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid
from collections.abc import Awaitable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.integration.test_db_adoption import insert_waits_during
from tests.integration.test_pooler import pgbouncer as pgbouncer
from tests.integration.test_pooler import pooled_environment
from tests.support import Env, PgBouncer, Stack, eventually
from xnovu.core.models import PollKind
from xnovu.db.queries import q
from xnovu.db.repository import ClaimLimits, Repository
from xnovu.db.retention import Pruner, RetentionPolicy, last_prune, table_sizes
from xnovu.errors import XnovuError
from xnovu.temporal.schedules import RETENTION_ID, set_paused, trigger_now

DAYS = 30
POLICY = RetentionPolicy(days=DAYS, batch_rows=2, candidates=3, pause_ratio=0)


async def ended(
    env: Env,
    wf: int,
    *,
    status: str,
    days_ago: float,
    recipients: int = 3,
    dead: bool = False,
    n: int = 1,
    sent_to: bool = True,
) -> list[int]:
    """`n` notifications that reached `status` `days_ago` days ago, each with a ledger row (SENT) per recipient
    unless `sent_to` is false."""
    ids = await env.insert(wf, n, recipients=recipients)
    async with env.repo.pool.acquire() as conn, conn.transaction():
        # updated_at is what "ended N days ago" is measured by. The touch trigger would set it to now() (and in
        # its keep mode puts back the old value): backdating it means this transaction's triggers stay off.
        await conn.execute("SET LOCAL session_replication_role = replica")
        await conn.execute(
            "UPDATE notify.ent_notification SET notification_status = $2::text::shared_types.notification_status, "
            "processed_at = now() - make_interval(secs => $3 * 86400), "
            "dead_lettered_at = CASE WHEN $4 THEN now() - make_interval(secs => $3 * 86400) END, "
            "retracted_at = CASE WHEN $2 = 'RETRACTED' THEN now() - make_interval(secs => $3 * 86400) END, "
            "updated_at = now() - make_interval(secs => $3 * 86400) WHERE id = ANY($1::bigint[])",
            ids,
            status,
            float(days_ago),
            dead,
        )
        await conn.execute(
            "INSERT INTO notify.ent_notification_delivery (notification_id, recipient_id, status, updated_at) "
            "SELECT n.id, r, 'SENT', n.updated_at FROM notify.ent_notification n, unnest(n.recipients) AS r "
            "WHERE n.id = ANY($1::bigint[]) AND $2",
            ids,
            sent_to,
        )
    return ids


async def ledger(env: Env, ids: list[int]) -> dict[int, int]:
    rows = await env.repo.pool.fetch(
        "SELECT notification_id, count(*) AS n FROM notify.ent_notification_delivery "
        "WHERE notification_id = ANY($1::bigint[]) GROUP BY 1",
        ids,
    )
    return {i: 0 for i in ids} | {r["notification_id"]: r["n"] for r in rows}


async def add_fires(env: Env, wf: int, days_ago: list[float]) -> int:
    rule = await env.repo.pool.fetchval(
        "INSERT INTO notify.ent_notification_rule (name, notification_workflow_id) VALUES ($1, $2) RETURNING id",
        f"rule {uuid.uuid4().hex[:6]}",
        wf,
    )
    await env.repo.pool.execute(
        "INSERT INTO notify.xnovu_rule_fire (rule_id, scheduled_time, fired_at) "
        "SELECT $1, now() - make_interval(secs => d * 86400), now() - make_interval(secs => d * 86400) "
        "FROM unnest($2::float8[]) AS d",
        rule,
        days_ago,
    )
    return int(rule)


async def fires_left(env: Env, rule: int) -> list[float]:
    rows = await env.repo.pool.fetch(
        "SELECT round(extract(epoch FROM now() - scheduled_time) / 86400) AS d FROM notify.xnovu_rule_fire "
        "WHERE rule_id = $1 ORDER BY scheduled_time",
        rule,
    )
    return [float(r["d"]) for r in rows]


async def test_a_prune_removes_the_records_of_notifications_that_ended_before_the_retention_window(env: Env) -> None:
    wf = await env.workflow("welcome")
    old_sent = await ended(env, wf, status="SENT", days_ago=40, n=2)
    recent_sent = await ended(env, wf, status="SENT", days_ago=10)
    old_retracted = await ended(env, wf, status="RETRACTED", days_ago=31)
    old_dead = await ended(env, wf, status="FAILED", days_ago=45, dead=True)
    # Not terminal, however old: a retry still to come, a held or claimed row.
    retrying = await ended(env, wf, status="FAILED", days_ago=60)
    pending = await ended(env, wf, status="PENDING", days_ago=60)
    processing = await ended(env, wf, status="PROCESSING", days_ago=60)
    steady = await add_fires(env, wf, [50, 40, 31, 20, 1])
    quiet = await add_fires(env, wf, [90, 70])  # a rule that stopped firing: its latest fire stays
    await env.execute(
        "INSERT INTO notify.xnovu_rate_budget (name, tokens, updated_at) VALUES "
        "('novu-events', 5, now()), ('retired-bucket', 5, now() - interval '40 days')"
    )

    run = await Pruner(env.repo.pool, POLICY).run("test")

    gone = [*old_sent, *old_retracted, *old_dead]
    kept = [*recent_sent, *retrying, *pending, *processing]
    assert await ledger(env, gone) == {i: 0 for i in gone}
    assert await ledger(env, kept) == {i: 3 for i in kept}
    assert await fires_left(env, steady) == [20, 1]
    assert await fires_left(env, quiet) == [70]
    budgets = await env.repo.pool.fetch("SELECT name FROM notify.xnovu_rate_budget ORDER BY name")
    assert [b["name"] for b in budgets] == ["novu-events"]
    assert len(await env.statuses(gone + kept)) == len(gone + kept), "notifications themselves are never deleted"
    # Only a dead-lettered row can be sent again (dlq requeue): it remembers that its ledger is gone.
    marks = await env.repo.pool.fetch(
        "SELECT id FROM notify.ent_notification WHERE xnovu_ledger_pruned_at IS NOT NULL ORDER BY id"
    )
    assert [m["id"] for m in marks] == old_dead
    assert (await env.row(old_dead[0]))["updated_at"] < datetime.now(UTC) - timedelta(days=44), "updated_at kept"

    assert run.finished_at is not None and run.error is None and run.source == "test"
    assert (run.deliveries, run.rule_fires, run.budget_rows, run.notifications) == (12, 4, 1, 0)
    assert run.batches >= 6, "2 ledger rows per batch: several batches"
    assert run.cutoff < datetime.now(UTC) - timedelta(days=DAYS - 1)

    again = await Pruner(env.repo.pool, POLICY).run("test")
    assert (again.deliveries, again.rule_fires, again.budget_rows) == (0, 0, 0)
    assert (await last_prune(env.repo.pool)) == again


async def test_a_dry_run_counts_what_a_prune_would_remove_and_removes_nothing(env: Env) -> None:
    wf = await env.workflow("welcome")
    old = await ended(env, wf, status="SENT", days_ago=40, recipients=4, n=3)
    await ended(env, wf, status="SENT", days_ago=5, recipients=4)
    await add_fires(env, wf, [40, 35, 2])
    pruner = Pruner(env.repo.pool, RetentionPolicy(days=DAYS, notification_days=35))

    preview = await pruner.preview()

    assert (preview.deliveries, preview.ledger_notifications, preview.rule_fires) == (12, 3, 2)
    assert preview.notifications == 3 and preview.budget_rows == 0
    assert await ledger(env, old) == {i: 4 for i in old}
    assert await last_prune(env.repo.pool) is None, "a dry run leaves no prune record"
    run = await pruner.run("test")
    assert (run.deliveries, run.rule_fires, run.notifications) == (12, 2, 3)


async def test_notifications_themselves_go_only_when_asked_and_only_after_their_own_longer_window(env: Env) -> None:
    wf = await env.workflow("welcome")
    ancient = await ended(env, wf, status="SENT", days_ago=400)
    old = await ended(env, wf, status="SENT", days_ago=40)
    dead = await ended(env, wf, status="FAILED", days_ago=500, dead=True)
    waiting = await ended(env, wf, status="PENDING", days_ago=500)
    rule = await env.repo.pool.fetchval(
        "INSERT INTO notify.ent_notification_rule (name, notification_workflow_id) VALUES ('r', $1) RETURNING id", wf
    )
    await env.execute(
        "INSERT INTO notify.xnovu_rule_fire (rule_id, scheduled_time, notification_id) VALUES ($1, now(), $2)",
        rule,
        ancient[0],
    )

    await Pruner(env.repo.pool, RetentionPolicy(days=DAYS)).run("test")
    assert len(await env.statuses(ancient + old + dead + waiting)) == 4, "not asked: every notification stays"

    run = await Pruner(env.repo.pool, RetentionPolicy(days=DAYS, notification_days=365, batch_rows=1)).run("test")
    assert await env.statuses(ancient + old + dead + waiting) == {old[0]: "SENT", waiting[0]: "PENDING"}
    assert run.notifications == 2 and run.notification_cutoff is not None
    fire = await env.repo.pool.fetchval("SELECT notification_id FROM notify.xnovu_rule_fire WHERE rule_id = $1", rule)
    assert fire is None, "the fire stays, without its notification"


async def test_a_requeue_refuses_a_dead_letter_whose_ledger_was_pruned_unless_forced(env: Env) -> None:
    wf = await env.workflow("welcome")
    [pruned] = await ended(env, wf, status="FAILED", days_ago=40, dead=True)
    [never_sent] = await ended(env, wf, status="FAILED", days_ago=40, dead=True, sent_to=False)
    [young] = await ended(env, wf, status="FAILED", days_ago=3, dead=True)
    await Pruner(env.repo.pool, POLICY).run("test")

    assert set(await env.repo.dlq_ledger_pruned([pruned, never_sent, young])) == {pruned}
    assert sorted(await env.repo.dlq_requeue([pruned, never_sent, young])) == sorted([never_sent, young])
    assert (await env.row(pruned))["status"] == "FAILED", "refused: its retry would resend to acknowledged recipients"
    assert await env.repo.dlq_requeue([pruned], force=True) == [pruned]
    row = await env.row(pruned)
    assert row["status"] == "PENDING" and row["xnovu_ledger_pruned_at"] is None


async def test_a_requeue_racing_the_prune_of_its_ledger_waits_for_it_and_then_refuses(env: Env) -> None:
    """The prune's batch locks the dead letter before it deletes its ledger and commits the mark with the deletes;
    a requeue arriving meanwhile waits for the batch and then finds the mark (queries.sql `dlq_requeue`)."""
    wf = await env.workflow("welcome")
    [nid] = await ended(env, wf, status="FAILED", days_ago=40, dead=True)
    cutoff = await env.repo.pool.fetchval("SELECT now() - interval '30 days'")
    async with env.repo.pool.acquire() as prune:
        tx = prune.transaction()
        await tx.start()
        assert [r["id"] for r in await prune.fetch(q("retention_lock_dead"), [nid], cutoff)] == [nid]
        await prune.fetch(q("retention_ledger_delete"), [nid], 100)
        await prune.execute(q("retention_mark_ledger_pruned"), [nid])
        requeue = asyncio.create_task(env.repo.dlq_requeue([nid]))
        await asyncio.sleep(0.3)
        assert not requeue.done(), "the requeue waits for the batch"
        await tx.commit()
    assert await requeue == [], "then it sees the mark and refuses"
    assert (await env.row(nid))["status"] == "FAILED"

    # The other order: a requeue that committed first takes the row out of the prune's hands.
    [other] = await ended(env, wf, status="FAILED", days_ago=40, dead=True)
    assert await env.repo.dlq_requeue([other]) == [other]
    async with env.repo.pool.acquire() as prune, prune.transaction():
        assert await prune.fetch(q("retention_lock_dead"), [other], cutoff) == []
    assert (await ledger(env, [other]))[other] == 3


async def test_only_one_prune_runs_at_a_time(env: Env) -> None:
    pruner = Pruner(env.repo.pool, POLICY)
    first = await pruner.begin("schedule")
    assert first is not None
    with pytest.raises(XnovuError, match=f"another prune is running \\(run {first.id}"):
        await pruner.run("cli")
    await pruner.finish(first.id)
    assert (await pruner.run("cli")).id > first.id


async def test_a_prune_whose_worker_died_is_taken_over_after_its_lease_and_recorded_as_abandoned(env: Env) -> None:
    wf = await env.workflow("welcome")
    old = await ended(env, wf, status="SENT", days_ago=40)
    pruner = Pruner(env.repo.pool, POLICY)
    dead = await pruner.begin("schedule")
    # Its worker died: no batch has renewed the lease for longer than the lease.
    await env.execute("UPDATE notify.xnovu_retention_state SET heartbeat_at = now() - interval '10 minutes'")
    run = await pruner.run("cli")
    assert run.deliveries == 3 and await ledger(env, old) == {old[0]: 0}
    abandoned = await pruner.get(dead.id)
    assert abandoned.finished_at is not None and "abandoned" in (abandoned.error or ""), abandoned
    # The dead one cannot come back and prune beside a live one: its next batch finds the lease taken.
    live = await pruner.begin("cli")
    with pytest.raises(XnovuError, match="lost its lease"):
        await pruner.step(dead.id)
    await pruner.finish(live.id)


async def test_a_prune_through_a_transaction_pooler(stack: Stack, pgbouncer: PgBouncer) -> None:
    """No session state: the lease is a row, every batch a transaction of its own (README "Transaction pooler")."""
    async with pooled_environment(stack, pgbouncer) as env:
        await env.repo.migrate()
        wf = await env.workflow("welcome")
        old = await ended(env, wf, status="SENT", days_ago=40, n=3)
        first, second = await asyncio.gather(
            Pruner(env.repo.pool, POLICY).run("cli"), Pruner(env.repo.pool, POLICY).run("cli"), return_exceptions=True
        )
        runs = [r for r in (first, second) if not isinstance(r, BaseException)]
        busy = [r for r in (first, second) if isinstance(r, BaseException)]
        assert sum(r.deliveries for r in runs) == 9 and set((await ledger(env, old)).values()) == {0}
        assert all("another prune is running" in str(b) for b in busy), busy


# -- batches, claims and inserts ---------------------------------------------------------------------------------

#: CI size: notifications x recipients ledger rows, pruned LEDGER_BATCH rows per batch.
NOTIFICATIONS, RECIPIENTS, LEDGER_BATCH = 400, 250, 2_000
#: I7 (docs/design.md): claims and producers' inserts never wait long.
MAX_WAIT_S = 0.5

BULK_ENDED = """
WITH n AS (
  INSERT INTO notify.ent_notification
    (name, publish_status, notification_workflow_id, notification_status, payload, recipients, processed_at,
     updated_at)
  SELECT 'ended ' || g, 'PUBLISH', $1, 'SENT', '{}'::jsonb, '{}'::uuid[], now() - interval '40 days',
         now() - interval '40 days' - g * interval '1 second'
  FROM generate_series(1, $2) AS g
  RETURNING id
)
INSERT INTO notify.ent_notification_delivery
  (notification_id, recipient_id, status, novu_transaction_id, idempotency_key, attempts, last_http_status, updated_at)
SELECT n.id, gen_random_uuid(), 'SENT', 'xnovu-' || n.id || '-' || r, 'key-' || n.id, 1, 201, now() - interval '40 days'
FROM n, generate_series(1, $3) AS r
"""

DUE = """
INSERT INTO notify.ent_notification (name, publish_status, notification_workflow_id, payload, recipients)
SELECT 'due ' || g, 'PUBLISH', $1, '{}'::jsonb, ARRAY[gen_random_uuid()] FROM generate_series(1, $2) AS g
"""


async def fill_ended(env: Env, wf: int, notifications: int, recipients: int, step: int = 20_000) -> None:
    """`notifications` SENT 40 days ago with `recipients` ledger rows each, in statements of about `step` rows."""
    per = max(1, step // recipients)
    for start in range(0, notifications, per):
        await env.repo.pool.execute(BULK_ENDED, wf, min(per, notifications - start), recipients, timeout=3600)


async def claims_during(
    repo: Repository, work: Awaitable[Any], *, settle_s: float = 0.3, pause_s: float = 0.02
) -> tuple[list[float], Any]:
    """Claim 5 due rows at a time, as a poll does, for as long as `work` runs; each claim's seconds and `work`'s
    result (the claim loop of tests/integration/test_migrate_and_claims.py). Claimed rows are then marked SENT, as
    their attempts would, so the rows in flight that every claim reads stay few however long the loop runs."""
    limits = ClaimLimits(max_rows=1_000_000, max_tokens=1_000_000)
    claims: list[float] = []
    done = asyncio.Event()

    async def loop() -> None:
        while not done.is_set():
            t0 = time.monotonic()
            batch = await repo.claim(PollKind.NEW, batch_size=5, lease_ms=600_000, limits=limits)
            claims.append(time.monotonic() - t0)
            await repo.pool.execute(
                "UPDATE notify.ent_notification SET notification_status = 'SENT', processed_at = now() "
                "WHERE id = ANY($1::bigint[])",
                [r.notification_id for r in batch.rows],
            )
            await asyncio.sleep(pause_s)

    task = asyncio.create_task(loop())
    try:
        await asyncio.sleep(settle_s)
        result = await work
    finally:
        done.set()
        await task
    return claims, result


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[18] if len(values) >= 2 else max(values, default=0.0)


async def test_a_prune_goes_in_short_batches_while_claims_and_inserts_go_on(env: Env) -> None:
    wf = await env.workflow("welcome")
    await fill_ended(env, wf, NOTIFICATIONS, RECIPIENTS)
    await env.repo.pool.execute(DUE, wf, 5_000)
    await env.repo.pool.execute("VACUUM ANALYZE notify.ent_notification")
    rows = NOTIFICATIONS * RECIPIENTS
    policy = RetentionPolicy(days=DAYS, batch_rows=LEDGER_BATCH)

    baseline, _ = await claims_during(env.repo, asyncio.sleep(2))
    url = env.settings.database_url
    assert url is not None
    box: list[Any] = []

    async def prune() -> None:
        box.append(await Pruner(env.repo.pool, policy).run("test"))

    started = time.monotonic()
    claims, (worst_insert, inserts) = await claims_during(
        env.repo, insert_waits_during(url.get_secret_value(), prune())
    )
    [run] = box
    took = time.monotonic() - started
    print(
        f"\npruned {run.deliveries} ledger rows in {took:.1f} s, {run.batches} batches, longest "
        f"{run.longest_batch_ms} ms; claims before: {len(baseline)}, p95 {p95(baseline) * 1000:.1f} ms; during: "
        f"{len(claims)}, p50 {statistics.median(claims) * 1000:.1f} ms, p95 {p95(claims) * 1000:.1f} ms, max "
        f"{max(claims) * 1000:.1f} ms; {inserts} inserts, slowest {worst_insert * 1000:.0f} ms"
    )
    assert (
        run.deliveries == rows
        and await env.repo.pool.fetchval("SELECT count(*) FROM notify.ent_notification_delivery") == 0
    )
    assert run.batches >= rows // LEDGER_BATCH, "at most one batch of ledger rows per transaction"
    assert run.longest_batch_ms < MAX_WAIT_S * 1000, "no transaction of the prune lasts long"
    assert len(claims) >= 10, "claims went on while the prune ran"
    assert max(claims) < MAX_WAIT_S and worst_insert < MAX_WAIT_S


# -- the Schedule and /status ------------------------------------------------------------------------------------


async def test_the_retention_schedule_prunes_and_a_paused_one_does_not(env: Env) -> None:
    wf = await env.workflow("welcome")
    first = await ended(env, wf, status="SENT", days_ago=40)
    async with env.worker() as manager:
        client = manager.client
        assert client is not None
        desc = await client.get_schedule_handle(RETENTION_ID).describe()
        assert not desc.schedule.state.paused and "RETENTION_DAYS" in (desc.schedule.state.note or "")

        await trigger_now(client, RETENTION_ID)
        run = await eventually(lambda: finished_run(env), timeout=30)
        assert run.source == "schedule" and run.deliveries == 3
        assert await ledger(env, first) == {first[0]: 0}

        second = await ended(env, wf, status="SENT", days_ago=40)
        await set_paused(client, [RETENTION_ID], True, "audit: keep everything")
        await trigger_now(client, RETENTION_ID)
        await eventually(lambda: schedule_idle(client), timeout=30)
        assert await ledger(env, second) == {second[0]: 3}, "paused: nothing pruned"
        assert (await last_prune(env.repo.pool)) == run

        await set_paused(client, [RETENTION_ID], False)
        await trigger_now(client, RETENTION_ID)
        await eventually(lambda: _ledger_empty(env, second), timeout=30)


async def finished_run(env: Env) -> Any:
    run = await last_prune(env.repo.pool)
    return run if run is not None and run.finished_at is not None else None


async def schedule_idle(client: Any) -> bool:
    """The triggered action started and ended (a paused Schedule still runs what it is asked to)."""
    info = (await client.get_schedule_handle(RETENTION_ID).describe()).info
    return len(info.recent_actions) >= 2 and not info.running_actions


async def _ledger_empty(env: Env, ids: list[int]) -> bool:
    return set((await ledger(env, ids)).values()) == {0}


async def test_status_shows_the_size_of_xnovus_tables_and_the_last_prune(env: Env) -> None:
    wf = await env.workflow("welcome")
    await ended(env, wf, status="SENT", days_ago=40, recipients=5, n=4)
    await env.execute("ANALYZE notify.ent_notification_delivery")
    sizes = await table_sizes(env.repo.pool)
    assert sizes["ent_notification_delivery"]["rows_estimate"] == 20
    run = await Pruner(env.repo.pool, POLICY).run("cli")
    async with env.worker() as manager, httpx.AsyncClient() as http:
        status = (await http.get(f"http://127.0.0.1:{manager.health_port}/status")).json()
    tables = status["tables"]
    assert {"ent_notification", "ent_notification_delivery", "xnovu_rule_fire", "xnovu_prune_run"} <= set(tables)
    assert all(t["bytes"] > 0 for t in tables.values()), tables
    last = status["last_prune"]
    assert last["id"] == run.id and last["deliveries"] == 20 and last["source"] == "cli"
    assert last["finished_at"] is not None and last["rows"] == 20
