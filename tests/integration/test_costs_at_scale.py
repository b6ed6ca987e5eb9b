"""Costs that do not grow with the table (issue 16, finding 9; docs/performance.md "Costs that do not grow").

Every claim (new, scheduled, failed), the hold sweep that precedes the new and scheduled ones, and every acquire must
touch about the same number of buffers on a table of XNOVU_COST_ROWS rows (default 200 000;
`XNOVU_COST_ROWS=1000000` gives the issue's size) holding a tenth of that in held rows (PENDING under a DRAFT
workflow, the oldest of all), a tenth in retries hours ahead, and one notification of 100 000 recipients of which
Novu acknowledged 90 000, as on a table holding only the due rows. Measured with
`EXPLAIN (ANALYZE, BUFFERS)` (shared buffers hit or read), never wall time.
"""

from __future__ import annotations

import os
import time
from typing import Any

import asyncpg
import pytest

from tests.support import Env
from xnovu.db.queries import q
from xnovu.service.processor import PIECE_RECIPIENTS

ROWS = int(os.environ.get("XNOVU_COST_ROWS", "200000"))
HELD = ROWS // 10
FUTURE_RETRIES = ROWS // 10
BIG_RECIPIENTS = 100_000
BIG_ACKNOWLEDGED = 90_000
DUE = 50
LEASE_MS = 900_000

DUE_ROWS = """
INSERT INTO notify.ent_notification
  (name, publish_status, notification_workflow_id, notification_status, payload, recipients, scheduled_for,
   next_attempt_at, attempts)
SELECT 'due' || g, 'PUBLISH', $1,
       (CASE WHEN g <= 2 * $2 THEN 'PENDING' ELSE 'FAILED' END)::shared_types.notification_status,
       '{}'::jsonb, ARRAY[gen_random_uuid()],
       CASE WHEN g > $2 AND g <= 2 * $2 THEN now() - interval '1 minute' END,
       CASE WHEN g > 2 * $2 THEN now() - interval '1 minute' END,
       CASE WHEN g > 2 * $2 THEN 1 ELSE 0 END
FROM generate_series(1, 3 * $2) AS g
"""

# The bulk: SENT history, held rows older than every due row (the head of the claim indexes: the worst case),
# half of them scheduled in the past, and retries due in an hour.
BULK = """
INSERT INTO notify.ent_notification
  (name, publish_status, notification_workflow_id, notification_status, payload, recipients, scheduled_for,
   next_attempt_at, attempts, updated_at)
SELECT 'bulk' || g, 'PUBLISH',
       CASE WHEN g <= $3 THEN $2::bigint ELSE $1::bigint END,
       (CASE WHEN g <= $3 THEN 'PENDING' WHEN g <= $3 + $4 THEN 'FAILED' ELSE 'SENT' END)
         ::shared_types.notification_status,
       '{}'::jsonb, ARRAY[gen_random_uuid()],
       CASE WHEN g <= $3 AND g % 2 = 0 THEN now() - interval '2 days' END,
       CASE WHEN g > $3 AND g <= $3 + $4 THEN now() + interval '1 hour' END,
       CASE WHEN g > $3 AND g <= $3 + $4 THEN 1 ELSE 0 END,
       now() - interval '1 day'
FROM generate_series(1, $5) AS g
"""

# Being sent (a later piece of its first attempt), so it is no claim's candidate: a claim that finds it due reads its
# recipients once to count its tokens (README "Performance" has that cost).
BIG_ROW = """
INSERT INTO notify.ent_notification
  (name, publish_status, notification_workflow_id, payload, recipients, notification_status, attempts, next_attempt_at,
   xnovu_claim_tokens)
SELECT 'big', 'PUBLISH', $1, '{}'::jsonb, array_agg(gen_random_uuid()), 'PROCESSING', 1, now() + interval '1 hour', $2
FROM generate_series(1, $2)
RETURNING id
"""

# The ledger as the pieces write it: window after window in recipient-id order (nine pieces done). A piece then reads
# its window's rows from consecutive heap pages.
BIG_LEDGER = """
INSERT INTO notify.ent_notification_delivery (notification_id, recipient_id, status, key_generation)
SELECT $1, u.r, 'SENT', 0
FROM (SELECT r FROM unnest((SELECT recipients FROM notify.ent_notification WHERE id = $1)) AS r ORDER BY r LIMIT $2) u
ORDER BY u.r
"""

CLAIMS: dict[str, list[Any]] = {
    "candidates_new": [100, None],
    "candidates_scheduled": [100, None, 60_000],
    "candidates_failed": [100, None, LEASE_MS, []],
    # The heads of the (urgency, enterprise) groups a claim reads beside the oldest rows (docs/priority.md "Claims").
    "heads_new": [100, None, None, 16, 4],
    "heads_scheduled": [100, None, None, 16, 4, 60_000],
    "heads_failed": [100, None, None, 16, 4],
}


def _walk(plan: dict[str, Any]) -> list[dict[str, Any]]:
    nodes = [plan]
    for child in plan.get("Plans", []):
        nodes.extend(_walk(child))
    return nodes


def _buffers(node: dict[str, Any]) -> int:
    return int(node.get("Shared Hit Blocks", 0) + node.get("Shared Read Blocks", 0))


#: On a table of a few pages the planner reads everything sequentially; the small table's baseline is taken with the
#: plan shape a large table gets (index scans, nested loops), so the comparison is about the rows read, not the plan.
INDEX_PLANS = ("enable_seqscan", "enable_bitmapscan", "enable_hashjoin", "enable_mergejoin")


async def _explain(conn: asyncpg.Connection, sql: str, *args: Any, index_plans: bool = False) -> dict[str, Any]:
    """The executed plan of `sql` (rolled back: a claim or an acquire changes nothing)."""
    tx = conn.transaction()
    await tx.start()
    try:
        for setting in INDEX_PLANS if index_plans else ():
            await conn.execute(f"SET LOCAL {setting} = off")
        plan = await conn.fetchval(f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {sql}", *args)
    finally:
        await tx.rollback()
    root: dict[str, Any] = plan[0]["Plan"]
    return root


def _scans(plan: dict[str, Any]) -> list[str]:
    """Each scan of a plan with its index and rows, for a readable failure."""
    return [
        f"{n['Node Type']} {n.get('Index Name', n.get('Relation Name', ''))} rows={n['Actual Rows']}"
        f" removed={n.get('Rows Removed by Filter', 0)} buffers={_buffers(n)}"
        for n in _walk(plan)
        if "Scan" in n["Node Type"]
    ]


async def _costs(
    conn: asyncpg.Connection, probe: int, plans: dict[str, list[str]], *, index_plans: bool = False
) -> dict[str, int]:
    out: dict[str, int] = {}
    others: list[tuple[str, list[Any]]] = [
        ("acquire", [probe, 1, LEASE_MS, None, PIECE_RECIPIENTS, "workflow"]),
        ("hold_sweep", [1000, list(await conn.fetchval(q("held_workflows")) or []), [], False]),
        ("held_row_workflows", []),
        # What every claim reads first: with the big row in flight, its tokens, not its 1.6 MB recipients array.
        ("in_flight", [LEASE_MS, None]),
        ("claim_flight", [LEASE_MS, None, 300, "default", "xnovu-notification-processing", 15_000]),
        # What every worker runs before its hold sweep: with no priority changed, an empty read.
        ("priority_recompute_step", [5000]),
    ]
    for name, args in [*CLAIMS.items(), *others]:
        plan = await _explain(conn, q(name), *args, index_plans=index_plans)
        out[name] = _buffers(plan)
        plans[name] = _scans(plan)
    return out


def _ledger_rows_read(plan: dict[str, Any]) -> tuple[int, int]:
    """(rows, buffers) of every scan of the delivery ledger in a plan."""
    nodes = [n for n in _walk(plan) if n.get("Relation Name") == "ent_notification_delivery"]
    rows = sum(int(n["Actual Rows"]) * int(n.get("Actual Loops", 1)) for n in nodes)
    return rows, sum(_buffers(n) for n in nodes)


@pytest.mark.timeout(900)
async def test_each_claim_and_acquire_costs_the_same_on_a_large_table_as_on_a_small_one(env: Env) -> None:
    pool = env.repo.pool
    wf = await env.workflow("welcome")
    held_wf = await env.workflow("drafted")
    await pool.execute("UPDATE notify.ent_notification_workflow SET publish_status = 'DRAFT' WHERE id = $1", held_wf)
    await pool.execute(DUE_ROWS, wf, DUE)
    [probe] = await env.insert(wf)
    await pool.execute("VACUUM ANALYZE notify.ent_notification")  # as the large one: locking a row clears its
    # page's all-visible bit, one more buffer per claimed row on a vacuumed table
    async with pool.acquire() as conn:
        small_plans: dict[str, list[str]] = {}
        small = await _costs(conn, probe, small_plans, index_plans=True)

    started = time.perf_counter()
    await pool.execute(BULK, wf, held_wf, HELD, FUTURE_RETRIES, ROWS, timeout=900)
    big = await pool.fetchval(BIG_ROW, wf, BIG_RECIPIENTS)
    await pool.execute(BIG_LEDGER, big, BIG_ACKNOWLEDGED)
    await pool.execute("ANALYZE notify.ent_notification")
    while (await env.repo.hold_sweep(limit=20_000))[0]:
        pass
    await pool.execute("VACUUM ANALYZE notify.ent_notification", timeout=600)
    await pool.execute("VACUUM ANALYZE notify.ent_notification_delivery", timeout=600)
    built = time.perf_counter() - started
    async with pool.acquire() as conn:
        plans: dict[str, list[str]] = {}
        large = await _costs(conn, probe, plans)
        piece = await _explain(conn, q("acquire"), big, 1, LEASE_MS, None, PIECE_RECIPIENTS, "workflow")
        whole = await _explain(conn, q("acquire"), big, 1, LEASE_MS, None, None, "workflow")
    piece_rows, piece_buffers = _ledger_rows_read(piece)
    whole_rows, whole_buffers = _ledger_rows_read(whole)
    print(f"\n{ROWS} rows ({HELD} held, {FUTURE_RETRIES} retries ahead) built in {built:.0f} s")
    for name in small:
        print(f"{name}: {small[name]} buffers on the small table, {large[name]} on the large one")
        print(f"  small: {small_plans[name]}\n  large: {plans[name]}")
    print(
        f"acquire of one piece of the {BIG_RECIPIENTS}-recipient row: {piece_rows} ledger rows, {piece_buffers} "
        f"ledger buffers ({_buffers(piece)} in all); the whole row at once: {whole_rows} rows, {whole_buffers}"
    )
    for name in small:
        assert large[name] <= small[name] * 5 // 4 + 10, f"{name}: {small[name]} buffers small, {large[name]} large"
    assert piece_rows <= PIECE_RECIPIENTS, f"one piece read {piece_rows} ledger rows"
    assert piece_buffers <= PIECE_RECIPIENTS // 20, f"one piece read {piece_buffers} ledger buffers"
    assert whole_rows == BIG_ACKNOWLEDGED, "without a window acquire reads every acknowledged recipient"


async def test_the_failed_claim_reads_the_retry_index_in_order_without_sorting_every_due_row(env: Env) -> None:
    """1 000 due retries and 20 000 retries hours ahead: each scan returns at most a batch, and no sort sees more."""
    pool = env.repo.pool
    wf = await env.workflow("welcome")
    await pool.execute(
        """
        INSERT INTO notify.ent_notification
          (name, publish_status, notification_workflow_id, notification_status, payload, recipients,
           next_attempt_at, attempts)
        SELECT 'r' || g, 'PUBLISH', $1, 'FAILED', '{}'::jsonb, ARRAY[gen_random_uuid()],
               CASE WHEN g <= 1000 THEN now() - g * interval '1 second' ELSE now() + interval '2 hours' END, 1
        FROM generate_series(1, 21000) AS g
        """,
        wf,
    )
    await pool.execute("ANALYZE notify.ent_notification")
    async with pool.acquire() as conn:
        plan = await _explain(conn, q("candidates_failed"), *CLAIMS["candidates_failed"])
        leases = await _explain(conn, q("expired_leases"), 100, None, LEASE_MS)
    for root in (plan, leases):
        nodes = _walk(root)
        scans = [n for n in nodes if n.get("Relation Name") == "ent_notification"]
        assert scans and all(n["Node Type"] == "Index Scan" for n in scans), [n["Node Type"] for n in scans]
        for s in scans:
            assert s["Actual Rows"] <= 100 and s.get("Rows Removed by Filter", 0) <= 10, s
        for n in nodes:
            if n["Node Type"] == "Sort":
                assert all(c["Actual Rows"] <= 200 for c in n.get("Plans", [])), "a sort over every due row"
    assert plan["Actual Rows"] == 100


async def test_deleting_a_notification_does_not_read_the_whole_rule_fire_table(env: Env) -> None:
    """xnovu_rule_fire.notification_id references the notification (ON DELETE SET NULL): 20 000 fires, one delete."""
    pool = env.repo.pool
    wf = await env.workflow("welcome")
    rule = await pool.fetchval(
        "INSERT INTO notify.ent_notification_rule (name, notification_workflow_id) VALUES ('r', $1) RETURNING id", wf
    )
    await pool.execute(
        """
        WITH n AS (
          INSERT INTO notify.ent_notification (name, publish_status, notification_workflow_id, payload, recipients,
                                               notification_status)
          SELECT 'f' || g, 'PUBLISH', $1, '{}'::jsonb, ARRAY[gen_random_uuid()], 'SENT'
          FROM generate_series(1, 20000) AS g
          RETURNING id
        )
        INSERT INTO notify.xnovu_rule_fire (rule_id, scheduled_time, notification_id)
        SELECT $2, now() - n.id * interval '1 minute', n.id FROM n
        """,
        wf,
        rule,
    )
    await pool.execute("ANALYZE notify.xnovu_rule_fire")
    victim = await pool.fetchval("SELECT max(notification_id) FROM notify.xnovu_rule_fire")
    stats = (
        "SELECT coalesce(seq_scan, 0) AS seq, coalesce(seq_tup_read, 0) AS tuples FROM pg_stat_user_tables "
        "WHERE schemaname = 'notify' AND relname = 'xnovu_rule_fire'"
    )
    async with pool.acquire() as conn:
        await conn.execute("SELECT pg_stat_force_next_flush()")
        await conn.execute("SELECT pg_stat_clear_snapshot()")
        before = await conn.fetchrow(stats)
        await conn.execute("DELETE FROM notify.ent_notification WHERE id = $1", victim)
        await conn.execute("SELECT pg_stat_force_next_flush()")
        await conn.execute("SELECT pg_stat_clear_snapshot()")
        after = await conn.fetchrow(stats)
    assert await pool.fetchval(
        "SELECT notification_id FROM notify.xnovu_rule_fire WHERE rule_id = $1 ORDER BY scheduled_time LIMIT 1", rule
    ) is None, "the fire of the deleted notification no longer points at it"
    assert after["tuples"] - before["tuples"] < 100, f"the delete read {after['tuples'] - before['tuples']} fire rows"


async def test_held_rows_leave_the_claim_index_and_come_back_when_the_workflow_is_published(env: Env) -> None:
    pool = env.repo.pool
    wf = await env.workflow("welcome")
    ids = await env.insert(wf, 5)
    await pool.execute("UPDATE notify.ent_notification_workflow SET publish_status = 'DRAFT' WHERE id = $1", wf)
    assert await env.repo.hold_sweep(limit=3) == (3, 0)
    assert await env.repo.hold_sweep() == (2, 0)
    assert await env.repo.hold_sweep() == (0, 0)
    async with pool.acquire() as conn:
        plan = await _explain(conn, q("candidates_new"), *CLAIMS["candidates_new"])
    assert plan["Actual Rows"] == 0
    assert sum(int(n.get("Actual Rows", 0)) for n in _walk(plan) if n.get("Relation Name") == "ent_notification") == 0
    await pool.execute("UPDATE notify.ent_notification_workflow SET publish_status = 'PUBLISH' WHERE id = $1", wf)
    assert await env.repo.hold_sweep(limit=4) == (0, 4)
    assert await env.repo.hold_sweep() == (0, 1)
    rows = await pool.fetch("SELECT held_at FROM notify.ent_notification WHERE id = ANY($1)", ids)
    assert all(r["held_at"] is None for r in rows)
    async with pool.acquire() as conn, conn.transaction():
        back = await conn.fetch(q("candidates_new"), *CLAIMS["candidates_new"])
    assert sorted(r["id"] for r in back) == sorted(ids)
