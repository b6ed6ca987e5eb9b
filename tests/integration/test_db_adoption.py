"""`xnovu db migrate` on a live database of the original xnovu (README, Operations: adopting a live database).

The database is loaded from `tests/fixtures/original_schema.sql`, never from the migrated template: migrate must add
what xnovu owns and leave every object and row of the original schema exactly as it was, on every run.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from typing import Any

import asyncpg
import pytest

from tests.support import Stack, empty_database, new_database, original_database
from xnovu.db.migrate import migrate, migrations
from xnovu.db.queries import q

#: What xnovu's migrations add; everything else in the database belongs to the user.
XNOVU_TABLES = {
    "ent_notification_delivery",
    "xnovu_schema_migrations",
    "xnovu_rate_budget",
    "xnovu_wakeup_switch",
    "xnovu_worker",
}

#: The claim indexes of migrations 0004 and 0008 (their names are relied on by the claim queries).
CLAIM_INDEXES = {
    "ent_notification_xnovu_new_idx3",
    "ent_notification_xnovu_scheduled_idx3",
    "ent_notification_xnovu_holdable_idx",
    "ent_notification_xnovu_held_idx",
    "xnovu_rule_fire_notification_idx",
    "ent_notification_xnovu_retry_idx",
    "ent_notification_xnovu_inflight_idx",
    "ent_notification_xnovu_dlq_idx",
}

#: One query per kind of catalogue object the user owns; each returns (key, definition) rows.
_CATALOG: dict[str, str] = {
    "columns": """
        SELECT c.relname || '.' || a.attname AS key,
               concat_ws(' | ', format_type(a.atttypid, a.atttypmod), a.attnotnull, a.attidentity, a.attgenerated,
                         pg_get_expr(d.adbin, d.adrelid)) AS def
        FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
        LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
        WHERE n.nspname = 'notify' AND c.relkind = 'r' AND a.attnum > 0 AND NOT a.attisdropped""",
    "constraints": """
        SELECT c.relname || '.' || k.conname AS key, pg_get_constraintdef(k.oid) AS def
        FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = 'notify'""",
    "indexes": "SELECT indexname AS key, indexdef AS def FROM pg_indexes WHERE schemaname = 'notify'",
    "rls": """
        SELECT c.relname AS key, concat_ws(' | ', c.relrowsecurity, c.relforcerowsecurity, c.relacl::text) AS def
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'notify' AND c.relkind = 'r'""",
    "policies": """
        SELECT tablename || '.' || policyname AS key,
               concat_ws(' | ', permissive, roles::text, cmd, qual, with_check) AS def
        FROM pg_policies WHERE schemaname = 'notify'""",
    "triggers": """
        SELECT c.relname || '.' || t.tgname AS key, t.tgenabled::text || ' ' || pg_get_triggerdef(t.oid) AS def
        FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = 'notify' AND NOT t.tgisinternal""",
    "enums": """
        SELECT t.typname AS key, string_agg(e.enumlabel, ',' ORDER BY e.enumsortorder) AS def
        FROM pg_enum e JOIN pg_type t ON t.oid = e.enumtypid JOIN pg_namespace n ON n.oid = t.typnamespace
        WHERE n.nspname = 'shared_types' GROUP BY t.typname""",
    "functions": """
        SELECT n.nspname || '.' || p.proname AS key, pg_get_functiondef(p.oid) AS def
        FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname IN ('func', 'auth', 'base')""",
}

_USER_TABLES = (
    "typ_notification_category",
    "typ_notification_priority",
    "ent_notification_template",
    "ent_notification_workflow",
    "ent_notification_rule",
    "ent_notification",
)


async def snapshot(conn: asyncpg.Connection) -> dict[str, dict[str, str]]:
    """Every catalogue object and every row of the database, by kind then key."""
    snap = {kind: {r["key"]: r["def"] for r in await conn.fetch(sql)} for kind, sql in _CATALOG.items()}
    for table in _USER_TABLES:
        # identifiers from the fixed list above
        rows = await conn.fetch(f"SELECT id, to_jsonb(t)::text AS row FROM notify.{table} t ORDER BY id")
        snap[f"rows:{table}"] = {str(r["id"]): r["row"] for r in rows}
    return snap


def assert_unchanged(before: dict[str, dict[str, str]], after: dict[str, dict[str, str]]) -> None:
    """Every object and row of `before` is still there, defined alike; xnovu may only add."""
    for kind, objects in before.items():
        if kind.startswith("rows:"):
            # Rows gain xnovu's columns; every column they had keeps its value.
            import json

            for key, row in objects.items():
                old, new = json.loads(row), json.loads(after[kind][key])
                assert {k: new.get(k) for k in old} == old, f"{kind} id {key} changed"
            assert set(after[kind]) == set(objects), f"{kind}: rows added or removed"
            continue
        for key, definition in objects.items():
            assert key in after[kind], f"{kind} {key} disappeared"
            assert after[kind][key] == definition, f"{kind} {key} changed:\n{definition}\n->\n{after[kind][key]}"


async def seed_original_rows(conn: asyncpg.Connection) -> None:
    """Rows as the original TypeScript worker and the Supabase UI left them."""
    enterprise = uuid.uuid4()
    await conn.execute(
        "INSERT INTO notify.typ_notification_category (name, code, path, enterprise_id) VALUES ('Fire Drill', 'FD', "
        "'safety.drill', $1)",
        enterprise,
    )
    await conn.execute(
        "INSERT INTO notify.typ_notification_priority (name, code, enterprise_id) VALUES ('High', 'HI', $1)",
        enterprise,
    )
    wf = await conn.fetchval(
        "INSERT INTO notify.ent_notification_workflow (name, workflow_type, workflow_key, publish_status, "
        "default_channels, enterprise_id) VALUES ('Welcome', 'STATIC', 'welcome', 'PUBLISH', '{EMAIL,IN_APP}', $1) "
        "RETURNING id",
        enterprise,
    )
    await conn.execute(
        "INSERT INTO notify.ent_notification_rule (name, notification_workflow_id, trigger_type, trigger_config, "
        "enterprise_id) VALUES ('Monday', $1, 'CRON', '{\"cron\": \"0 9 * * MON\"}', $2)",
        wf,
        enterprise,
    )
    for i, (status, publish) in enumerate(
        [
            ("PENDING", "PUBLISH"),
            ("PROCESSING", "PUBLISH"),
            ("FAILED", "PUBLISH"),
            ("SENT", "PUBLISH"),
            ("PENDING", "DRAFT"),
            ("RETRACTED", "PUBLISH"),
        ]
    ):
        await conn.execute(
            "INSERT INTO notify.ent_notification (name, publish_status, notification_workflow_id, notification_status,"
            " payload, recipients, enterprise_id, updated_at, error_details) VALUES ($1, $2, $3, $4, '{\"a\": 1}', "
            "ARRAY[gen_random_uuid()], $5, now() - interval '1 hour', $6)",
            f"legacy {i}",
            publish,
            wf,
            status,
            enterprise,
            '{"error": "boom"}' if status == "FAILED" else None,
        )


async def test_migrate_on_the_original_schema_changes_nothing_it_does_not_own_and_runs_twice(stack: Stack) -> None:
    url = await original_database(stack)
    conn = await asyncpg.connect(url)
    try:
        await seed_original_rows(conn)
        before = await snapshot(conn)

        applied = await migrate(conn)
        assert applied, "the first run applies xnovu's migrations"
        assert await migrate(conn) == [], "the second run has nothing to do"
        after = await snapshot(conn)

        assert_unchanged(before, after)
        tables = {
            r["relname"]
            for r in await conn.fetch(
                "SELECT relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = 'notify' AND relkind = 'r'"
            )
        }
        assert tables >= XNOVU_TABLES
        for column in ("attempts", "next_attempt_at", "dead_lettered_at"):
            assert f"ent_notification.{column}" in after["columns"]
        valid = {
            r["relname"]
            for r in await conn.fetch(
                "SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE i.indisvalid"
            )
        }
        assert valid >= CLAIM_INDEXES
        assert "ent_notification.xnovu_touch_updated_at" in after["triggers"]
        # 0007 replaced 0005's statement update trigger by two row triggers with a WHEN clause.
        assert "ent_notification.xnovu_wakeup_after_update" not in after["triggers"]
        assert "ent_notification.xnovu_wakeup_after_update_new" in after["triggers"]
        assert "ent_notification.xnovu_wakeup_after_update_scheduled" in after["triggers"]
    finally:
        await conn.close()


async def test_two_migrate_runs_at_once_both_succeed(stack: Stack) -> None:
    url = await original_database(stack)
    conns = [await asyncpg.connect(url) for _ in range(2)]
    try:
        results = await asyncio.gather(*(migrate(c) for c in conns))
        assert sorted(v for r in results for v in r) == sorted({v for r in results for v in r}), results
        assert await migrate(conns[0]) == []
        invalid = await conns[0].fetchval("SELECT count(*) FROM pg_index WHERE NOT indisvalid")
        assert invalid == 0
    finally:
        for c in conns:
            await c.close()


async def test_an_index_left_invalid_by_an_interrupted_build_is_rebuilt(stack: Stack) -> None:
    url = await original_database(stack)
    conn = await asyncpg.connect(url)
    try:
        await seed_original_rows(conn)
        await conn.execute(
            "INSERT INTO notify.ent_notification (name, notification_status, payload, recipients, enterprise_id) "
            "VALUES ('dup a', 'PROCESSING', '{}', '{}', NULL), ('dup b', 'PROCESSING', '{}', '{}', NULL)"
        )
        # A concurrent build that fails half way leaves an INVALID index under the name migrate will use.
        with pytest.raises(asyncpg.UniqueViolationError):
            await conn.execute(
                "CREATE UNIQUE INDEX CONCURRENTLY ent_notification_xnovu_inflight_idx "
                "ON notify.ent_notification (notification_status) WHERE notification_status = 'PROCESSING'"
            )
        assert not await conn.fetchval(
            "SELECT indisvalid FROM pg_index WHERE indexrelid = 'notify.ent_notification_xnovu_inflight_idx'::regclass"
        )

        await migrate(conn)

        row = await conn.fetchrow(
            "SELECT i.indisvalid, pg_get_indexdef(i.indexrelid) AS def FROM pg_index i "
            "WHERE indexrelid = 'notify.ent_notification_xnovu_inflight_idx'::regclass"
        )
        assert row["indisvalid"]
        assert "UNIQUE" not in row["def"] and "(id)" in row["def"], row["def"]
    finally:
        await conn.close()


async def fill(conn: asyncpg.Connection, rows: int) -> None:
    """`rows` notifications in the original schema, mostly SENT like a table that has been in use for a while."""
    wf = await conn.fetchval(
        "INSERT INTO notify.ent_notification_workflow (name, workflow_type, workflow_key, publish_status) "
        "VALUES ('Bulk', 'STATIC', 'bulk', 'PUBLISH') RETURNING id"
    )
    step = 250_000
    for start in range(0, rows, step):
        await conn.execute(
            """
            INSERT INTO notify.ent_notification
              (name, publish_status, notification_workflow_id, notification_status, payload, recipients,
               processed_at, error_details)
            SELECT 'bulk ' || g, 'PUBLISH', $1,
                   (CASE WHEN g % 100 = 0 THEN 'PENDING' WHEN g % 100 = 1 THEN 'FAILED' ELSE 'SENT' END)
                     ::shared_types.notification_status,
                   jsonb_build_object('n', g, 'text', repeat('x', 400)), ARRAY[gen_random_uuid()], now(),
                   '{"successCount": 1, "totalRecipients": 1}'
            FROM generate_series($2::bigint, $3::bigint) g
            """,
            wf,
            start,
            min(start + step, rows) - 1,
            timeout=600,
        )
    if await conn.fetchval("SELECT to_regclass('notify.typ_notification_priority') IS NOT NULL"):
        # The original schema has priorities: a tenth of the rows name one, so 0011_priority_index.sql backfills
        # the urgency of the queued ones while inserts go on.
        ids = await conn.fetch(
            "INSERT INTO notify.typ_notification_priority (name, sort_order) VALUES ('urgent', 5), ('later', -1) "
            "RETURNING id"
        )
        await conn.execute(
            "UPDATE notify.ent_notification SET typ_notification_priority_id = CASE WHEN id % 20 = 0 THEN $1::bigint "
            "ELSE $2::bigint END WHERE id % 10 = 0 OR notification_status IN ('PENDING', 'FAILED')",
            ids[0]["id"],
            ids[1]["id"],
            timeout=600,
        )
    await conn.execute("VACUUM ANALYZE notify.ent_notification", timeout=600)


async def insert_waits_during(url: str, work: Any) -> tuple[float, int]:
    """Run `work` while another connection inserts one row at a time; (max seconds one insert took, inserts)."""
    inserter = await asyncpg.connect(url)
    stop = asyncio.Event()
    waits: list[float] = []

    async def loop() -> None:
        wf = await inserter.fetchval("SELECT min(id) FROM notify.ent_notification_workflow")
        i = 0
        while not stop.is_set():
            i += 1
            started = time.monotonic()
            await inserter.execute(
                "INSERT INTO notify.ent_notification (name, publish_status, notification_workflow_id, payload, "
                "recipients) VALUES ($1, 'PUBLISH', $2, '{}', ARRAY[gen_random_uuid()])",
                f"live {uuid.uuid4()}",
                wf,
            )
            waits.append(time.monotonic() - started)
            await asyncio.sleep(0.01)

    task = asyncio.create_task(loop())
    try:
        await asyncio.sleep(0.5)
        await work
    finally:
        stop.set()
        await task
        await inserter.close()
    return max(waits), len(waits)


#: Rows in the table the migration guard runs on: CI uses 200 000, `XNOVU_SCALE_ROWS=1000000` the issue's size.
GUARD_ROWS = int(os.environ.get("XNOVU_SCALE_ROWS", "200000"))
#: I7 (docs/design.md; README, Operations: "What `xnovu db migrate` does on a live database"): no insert waits
#: more than 0.5 s.
MAX_INSERT_WAIT_S = 0.5
#: The same bound, per statement that holds a lock inserts wait for: a migration that keeps such a lock while it
#: reads the table (a plain CREATE INDEX, a VALIDATE in the transaction that added the constraint) holds it in
#: proportion to the table, so a CI table smaller than the issue's 1 000 000 rows gets its share of the 0.5 s (never
#: under 0.1 s, room for a busy machine). Catalogue-only DDL holds its locks for milliseconds at any size. A DDL that
#: *waits* for a lock (insert queue behind it for up to migrate's 250 ms lock_timeout) is bounded by the first check.
MAX_BLOCKING_HOLD_S = max(0.1, MAX_INSERT_WAIT_S * min(GUARD_ROWS, 1_000_000) / 1_000_000)

#: Locks on ent_notification that the given backend holds and that an insert (ROW EXCLUSIVE) waits for.
_BLOCKING_HOLDS = """
SELECT (SELECT left(a.query, 100) FROM pg_stat_activity a WHERE a.pid = $1) AS query FROM pg_locks
WHERE pid = $1 AND granted AND relation = 'notify.ent_notification'::regclass
  AND mode IN ('ShareLock', 'ShareRowExclusiveLock', 'ExclusiveLock', 'AccessExclusiveLock')
LIMIT 1
"""


async def longest_blocking_hold(url: str, pid: int, stop: asyncio.Event) -> tuple[float, str]:
    """Sample (every 10 ms) how long backend `pid` keeps holding a lock inserts wait for: the longest stretch, and
    the start of the statement (a transactional migration's whole file) that was running when it began."""
    conn = await asyncpg.connect(url)
    longest, since, what, culprit = 0.0, None, "", ""
    try:
        while not stop.is_set():
            row = await conn.fetchrow(_BLOCKING_HOLDS, pid)
            now = time.monotonic()
            if row is not None and since is None:
                since, what = now, " ".join((row["query"] or "").split())
            elif row is None and since is not None:
                if now - since > longest:
                    longest, culprit = now - since, what
                since = None
            await asyncio.sleep(0.01)
    finally:
        await conn.close()
    if since is not None and time.monotonic() - since > longest:
        longest, culprit = time.monotonic() - since, what
    return longest, culprit


async def xnovu_first_install(stack: Stack) -> str:
    """A database as xnovu's first release created it: only migration 0001 applied (no later column, constraint,
    trigger or index), so every later migration runs against the filled table."""
    url = await empty_database(stack, f"first{next(stack.counter)}_{uuid.uuid4().hex[:6]}")
    conn = await asyncpg.connect(url)
    try:
        first = migrations()[0]
        await conn.execute(first.sql)
        await conn.execute(q("migrations_table"))
        await conn.execute(q("migrations_record"), first.version)
    finally:
        await conn.close()
    return url


@pytest.mark.timeout(900)
@pytest.mark.parametrize("start", ["original_schema", "xnovu_first_install"])
async def test_no_insert_waits_over_half_a_second_while_every_migration_runs_on_a_large_table(
    stack: Stack, start: str
) -> None:
    """The guard for every migration, present and future: all shipped migrations run on a large live table.

    From the adopter's original schema (tests/fixtures/original_schema.sql) and from xnovu's own first schema
    (where 0006 adds the rule column and its foreign key), a loop of single-row inserts runs on another connection
    while `migrate` applies everything; the slowest insert must stay under MAX_INSERT_WAIT_S, and no statement may
    hold a lock inserts wait for longer than MAX_BLOCKING_HOLD_S.
    """
    url = await (original_database(stack) if start == "original_schema" else xnovu_first_install(stack))
    conn = await asyncpg.connect(url)
    try:
        started = time.monotonic()
        await fill(conn, GUARD_ROWS)
        print(f"\n{start}: filled {GUARD_ROWS} rows in {time.monotonic() - started:.1f} s")
        started = time.monotonic()
        stop = asyncio.Event()
        holds = asyncio.create_task(longest_blocking_hold(url, conn.get_server_pid(), stop))
        try:
            worst, inserts = await insert_waits_during(url, migrate(conn))
        finally:
            stop.set()
        hold, culprit = await holds
        print(
            f"{start}: migrate on {GUARD_ROWS} rows took {time.monotonic() - started:.1f} s; {inserts} inserts "
            f"meanwhile, max insert wait {worst * 1000:.0f} ms; longest hold of a lock inserts wait for "
            f"{hold * 1000:.0f} ms ({culprit!r})"
        )
        assert worst < MAX_INSERT_WAIT_S, f"an insert waited {worst:.2f} s during migrate"
        assert hold < MAX_BLOCKING_HOLD_S, (
            f"migrate held a lock inserts wait for during {hold:.2f} s (bound {MAX_BLOCKING_HOLD_S:.2f} s at "
            f"{GUARD_ROWS} rows) in {culprit!r}: build indexes CONCURRENTLY and validate constraints outside the "
            "adding transaction"
        )
        assert await migrate(conn) == []
        if start == "original_schema":
            queued, wrong = await conn.fetchrow(
                "SELECT count(*), count(*) FILTER (WHERE n.xnovu_priority <> notify.xnovu_urgency(p.sort_order)) "
                "FROM notify.ent_notification n JOIN notify.typ_notification_priority p "
                "ON p.id = n.typ_notification_priority_id WHERE n.notification_status IN ('PENDING', 'FAILED')"
            )
            print(f"{start}: {queued} queued rows name a priority; {wrong} without their urgency after the backfill")
            assert queued > 0 and wrong == 0, "the backfill gave every queued row its urgency"
        invalid = await conn.fetchval("SELECT count(*) FROM pg_index WHERE NOT indisvalid")
        assert invalid == 0
        not_valid = await conn.fetchval("SELECT count(*) FROM pg_constraint WHERE NOT convalidated")
        assert not_valid == 0, "every constraint a migration added NOT VALID is validated"
    finally:
        await conn.close()


async def test_migrate_behind_a_long_transaction_retries_without_blocking_inserts(stack: Stack) -> None:
    """DDL that waits for a lock queues every later insert behind it: a short lock_timeout and retries prevent that."""
    url = await original_database(stack)
    conn = await asyncpg.connect(url)
    holder = await asyncpg.connect(url)
    try:
        await seed_original_rows(conn)
        # An application transaction that touched the table and stays open (holds ROW EXCLUSIVE).
        tx = holder.transaction()
        await tx.start()
        await holder.execute("UPDATE notify.ent_notification SET description = 'busy' WHERE name = 'legacy 0'")

        async def release_later() -> None:
            await asyncio.sleep(3)
            await tx.commit()

        releaser = asyncio.create_task(release_later())
        worst, inserts = await insert_waits_during(url, migrate(conn))
        await releaser
        print(f"\nbehind a 3 s transaction: {inserts} inserts, max insert wait {worst * 1000:.0f} ms")
        assert worst < 0.5, f"an insert waited {worst:.2f} s behind migrate's DDL (I7: 0.5 s)"
        assert await migrate(conn) == []
    finally:
        await holder.close()
        await conn.close()


async def test_the_rules_index_migration_changes_nothing_where_an_earlier_0006_built_the_index(stack: Stack) -> None:
    """Installs that applied 0006 before it was split already have the index and the validated key: the new
    0006_rules_index.sql finds both and does nothing, and 0006_rules.sql still runs again cleanly."""
    url = await new_database(stack, f"split{next(stack.counter)}_{uuid.uuid4().hex[:6]}")
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("DELETE FROM notify.xnovu_schema_migrations WHERE version = '0006_rules_index'")
        index = await conn.fetchval("SELECT 'notify.ent_notification_rule_id_idx'::regclass::oid")
        keys = await conn.fetch(
            "SELECT oid, convalidated FROM pg_constraint WHERE conrelid = 'notify.ent_notification'::regclass "
            "AND confrelid = 'notify.ent_notification_rule'::regclass"
        )
        assert [k["convalidated"] for k in keys] == [True]

        assert await migrate(conn) == ["0006_rules_index"]
        [rules] = [m for m in migrations() if m.version == "0006_rules"]
        await conn.execute(rules.sql)
        assert await migrate(conn) == []

        assert await conn.fetchval("SELECT 'notify.ent_notification_rule_id_idx'::regclass::oid") == index
        after = await conn.fetch(
            "SELECT oid, convalidated FROM pg_constraint WHERE conrelid = 'notify.ent_notification'::regclass "
            "AND confrelid = 'notify.ent_notification_rule'::regclass"
        )
        assert [(k["oid"], k["convalidated"]) for k in after] == [(keys[0]["oid"], True)]
    finally:
        await conn.close()
