"""The priority schema of migration 0011 under load, foreign roles and extreme data (docs/priority.md "Urgency").

Each test failed on the first version of 0011 (findings 5 to 8 of the issue-17 review): a sort_order change rewrote
every queued row of the priority in the operator's transaction, the triggers ran with the caller's privileges, the
urgency overflowed an integer, and deleting a priority sent its queued rows to the back of the queue.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import asyncpg
import pytest

from tests import support
from tests.integration.test_priority_claims import _claim, _priority, _rows
from tests.support import Env, Stack, connect, eventually, original_database
from xnovu.core.priority import URGENCY_LIMIT, PriorityOrder, urgency
from xnovu.db.migrate import migrate


async def _levels(env: Env, ids: list[int]) -> set[int]:
    return {r["xnovu_priority"] for r in await env.repo.pool.fetch(
        "SELECT xnovu_priority FROM notify.ent_notification WHERE id = ANY($1::bigint[])", ids
    )}


async def _cli(env: Env, monkeypatch: pytest.MonkeyPatch, *args: str) -> Any:
    from typer.testing import CliRunner

    from xnovu.cli import app

    monkeypatch.setenv("DATABASE_URL", env.settings.database_url.get_secret_value())  # type: ignore[union-attr]
    return await asyncio.to_thread(CliRunner().invoke, app, ["db", "priority", *args])


# -- a sort_order change on a large queue (finding 5) ---------------------------------------------------------------


async def test_changing_a_priority_sort_order_does_not_lock_its_queued_rows_for_long(env: Env) -> None:
    """The original schema gives most rows a priority ("normal"). Changing its sort_order only records the change:
    the operator's statement is short and locks no queued row, claims and workers go on meanwhile; the rows keep
    their urgency until recomputed, 5 000 per short transaction."""
    wf = await env.workflow("welcome")
    normal = await _priority(env, "normal", 0)
    async with env.repo.pool.acquire() as conn, conn.transaction():
        await conn.execute("SET LOCAL session_replication_role = replica")  # no triggers: 4 s less; urgency 0 is right
        await conn.execute(
            "INSERT INTO notify.ent_notification (name, publish_status, notification_workflow_id, payload, recipients,"
            " typ_notification_priority_id) SELECT 'n', 'PUBLISH', $1, '{}'::jsonb, ARRAY[gen_random_uuid()], $2"
            " FROM generate_series(1, 50000)", wf, normal,
        )
    [claimed] = await _claim(env, batch=1)
    async with env.repo.pool.acquire() as admin:
        async with admin.transaction():
            started = time.monotonic()
            await admin.execute("UPDATE notify.typ_notification_priority SET sort_order = -1 WHERE id = $1", normal)
            took = time.monotonic() - started
            during = await _claim(env, batch=10)
            await asyncio.wait_for(env.repo.pool.execute(
                "UPDATE notify.ent_notification SET error_details = '{}'::jsonb WHERE id = $1", claimed
            ), 1.0)
    assert len(during) == 10, "claims go on while the operator's transaction is open"
    ids = [r["id"] for r in await env.repo.pool.fetch(
        "SELECT id FROM notify.ent_notification WHERE typ_notification_priority_id = $1", normal
    )]
    assert await _levels(env, ids) == {0}, "until recomputed, a row keeps its urgency"
    steps: list[float] = []
    while True:
        started = time.monotonic()
        step = await env.repo.recompute_priority_step()
        steps.append(time.monotonic() - started)
        if step is None:
            break
    print(f"\nsort_order change on 50 000 queued rows: the operator's UPDATE {took * 1000:.1f} ms; a claim meanwhile "
          f"took {len(during)} rows; recomputed in {len(steps) - 1} transactions, the longest "
          f"{max(steps) * 1000:.0f} ms")
    assert took < 0.2
    assert await _levels(env, ids) == {-1}
    assert len(steps) - 1 == 11, "10 batches of 5 000 rows, and the empty batch that ends the priority's walk"


async def test_a_running_worker_recomputes_a_changed_priority(env: Env) -> None:
    """Rows of a DRAFT workflow: held, queued, never sent while the worker runs."""
    wf = await env.workflow("welcome")
    await env.execute("UPDATE notify.ent_notification_workflow SET publish_status = 'DRAFT' WHERE id = $1", wf)
    p = await _priority(env, "reminder", 1)
    ids = await _rows(env, wf, 3, priority=p)
    await env.execute("UPDATE notify.typ_notification_priority SET sort_order = 4 WHERE id = $1", p)
    assert await _levels(env, ids) == {1}
    async with env.worker():
        await eventually(lambda: _is(_levels(env, ids), {4}), timeout=20)
    assert await env.repo.pool.fetchval("SELECT count(*) FROM notify.xnovu_priority_recompute") == 0


async def _is(levels: Any, want: set[int]) -> bool:
    return bool(await levels == want)


async def test_db_priority_shows_and_finishes_a_pending_recompute(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    wf = await env.workflow("welcome")
    p = await _priority(env, "reminder", 1)
    ids = await _rows(env, wf, 3, priority=p)
    await env.execute("UPDATE notify.typ_notification_priority SET sort_order = 2 WHERE id = $1", p)
    shown = await _cli(env, monkeypatch)
    assert shown.exit_code == 0 and "1 priority waiting for its queued rows' urgency" in shown.output, shown.output
    done = await _cli(env, monkeypatch, "recompute")
    assert done.exit_code == 0 and "recomputed the urgency of 3 queued rows" in done.output, done.output
    assert await _levels(env, ids) == {2}


# -- roles of the original schema (finding 6) -----------------------------------------------------------------------


async def _as_role(env: Env, role: str, sql: str, *args: Any) -> str:
    async with env.repo.pool.acquire() as conn:
        tx = conn.transaction()
        await tx.start()
        try:
            await conn.execute(f"SET LOCAL ROLE {role}")
            await conn.execute(sql, *args)
            return "ok"
        except asyncpg.PostgresError as exc:
            return f"{type(exc).__name__}: {exc}"
        finally:
            await tx.rollback()


async def test_a_producer_role_without_rights_on_priorities_can_insert_rows_naming_one(env: Env) -> None:
    """INSERT on ent_notification and nothing on typ_notification_priority (the foreign key is checked as its
    owner) was enough before 0011; the row trigger reads the priority as the migrating role."""
    wf = await env.workflow("welcome")
    p = await _priority(env, "fire-emergency", 2)
    role = f"producer_{uuid.uuid4().hex[:8]}"
    await env.execute(f"CREATE ROLE {role} NOLOGIN")
    await env.execute(f"GRANT USAGE ON SCHEMA notify, shared_types TO {role}")
    await env.execute(f"GRANT INSERT, SELECT ON notify.ent_notification TO {role}")
    result = await _as_role(
        env, role,
        "INSERT INTO notify.ent_notification (name, publish_status, notification_workflow_id, payload, recipients,"
        " typ_notification_priority_id) VALUES ('p', 'PUBLISH', $1, '{}'::jsonb, ARRAY[gen_random_uuid()], $2)",
        wf, p,
    )
    assert result == "ok"


async def test_an_admin_role_without_rights_on_notifications_can_edit_and_delete_priorities(env: Env) -> None:
    p = await _priority(env, "reminder", 1)
    role = f"admin_{uuid.uuid4().hex[:8]}"
    await env.execute(f"CREATE ROLE {role} NOLOGIN")
    await env.execute(f"GRANT USAGE ON SCHEMA notify, shared_types TO {role}")
    await env.execute(f"GRANT SELECT, UPDATE, DELETE ON notify.typ_notification_priority TO {role}")
    edit = await _as_role(env, role, "UPDATE notify.typ_notification_priority SET sort_order = 3 WHERE id = $1", p)
    delete = await _as_role(env, role, "DELETE FROM notify.typ_notification_priority WHERE id = $1", p)
    assert (edit, delete) == ("ok", "ok")


# -- extreme sort_orders (finding 7) --------------------------------------------------------------------------------


@pytest.mark.parametrize(("higher_first", "normal", "sort_order"), [(False, 0, -2147483648), (True, -1, 2147483647)])
async def test_an_extreme_sort_order_does_not_make_producers_inserts_fail(
    env: Env, higher_first: bool, normal: int, sort_order: int
) -> None:
    wf = await env.workflow("welcome")
    await env.execute(
        "UPDATE notify.xnovu_priority_order SET higher_first = $1, normal_sort_order = $2", higher_first, normal
    )
    p = await _priority(env, "extreme", sort_order)
    [row] = await _rows(env, wf, 1, priority=p)
    assert await _levels(env, [row]) == {URGENCY_LIMIT}


@pytest.mark.parametrize("higher_first", [True, False])
async def test_the_clamped_urgency_in_the_database_matches_the_pure_one(env: Env, higher_first: bool) -> None:
    order = PriorityOrder.HIGHER_FIRST if higher_first else PriorityOrder.LOWER_FIRST
    for normal in (-2147483648, 0, 2147483647):
        await env.execute(
            "UPDATE notify.xnovu_priority_order SET higher_first = $1, normal_sort_order = $2", higher_first, normal
        )
        for sort_order in (None, -2147483648, -URGENCY_LIMIT - 1, -3, 0, 9, URGENCY_LIMIT + 1, 2147483647):
            got = await env.repo.pool.fetchval("SELECT notify.xnovu_urgency($1)", sort_order)
            assert got == urgency(sort_order, order=order, normal=normal), (normal, sort_order)


async def test_db_priority_set_refuses_a_normal_no_sort_order_can_have_and_saves_nothing(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = await _cli(env, monkeypatch, "set", "--order", "lower-first", "--normal", "2147483648")
    assert out.exit_code != 0
    assert "--normal 2147483648 is out of range" in str(out.exception), out.exception
    assert "-2147483648 to 2147483647" in str(out.exception)
    rule = await env.repo.priority_order()
    assert rule and (rule["higher_first"], rule["normal_sort_order"]) == (True, 0), "nothing saved"


async def test_db_priority_set_with_an_extreme_normal_recomputes_and_inserts_still_work(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    wf = await env.workflow("welcome")
    p = await _priority(env, "reminder", 1)
    [queued] = await _rows(env, wf, 1, priority=p)
    out = await _cli(env, monkeypatch, "set", "--order", "higher-first", "--normal", "-2147483648")
    assert out.exit_code == 0, out.output or out.exception
    [new] = await _rows(env, wf, 1, priority=p)
    assert await _levels(env, [queued, new]) == {URGENCY_LIMIT}


# -- a deleted priority (finding 8) ---------------------------------------------------------------------------------


async def _keeps_place(url: str, stack: Stack) -> tuple[float, float]:
    """A queued row due an hour ago: how far its due time (updated_at) moves when its priority's sort_order changes
    and is recomputed, and when the priority is deleted."""
    repo = await connect(support.test_settings(stack, url))
    try:
        wf = await repo.pool.fetchval(
            "INSERT INTO notify.ent_notification_workflow (name, workflow_type, workflow_key, publish_status) "
            "VALUES ('Welcome', 'STATIC', 'welcome', 'PUBLISH') RETURNING id"
        )
        p = await repo.pool.fetchval(
            "INSERT INTO notify.typ_notification_priority (name, sort_order) VALUES ('reminder', 0) RETURNING id"
        )
        nid = await repo.pool.fetchval(
            "INSERT INTO notify.ent_notification (name, publish_status, notification_workflow_id, payload, recipients,"
            " typ_notification_priority_id) VALUES ('n', 'PUBLISH', $1, '{}', ARRAY[gen_random_uuid()], $2)"
            " RETURNING id", wf, p,
        )
        async with repo.pool.acquire() as conn, conn.transaction():
            await conn.execute("SET LOCAL session_replication_role = replica")
            await conn.execute(
                "UPDATE notify.ent_notification SET updated_at = now() - interval '1 hour' WHERE id = $1", nid
            )

        async def due() -> Any:
            return await repo.pool.fetchval("SELECT updated_at FROM notify.ent_notification WHERE id = $1", nid)

        before = await due()
        await repo.pool.execute("UPDATE notify.typ_notification_priority SET sort_order = 2 WHERE id = $1", p)
        await repo.recompute_priorities()
        level = await repo.pool.fetchval("SELECT xnovu_priority FROM notify.ent_notification WHERE id = $1", nid)
        assert level == 2
        recomputed = await due()
        await repo.pool.execute("DELETE FROM notify.typ_notification_priority WHERE id = $1", p)
        level = await repo.pool.fetchval("SELECT xnovu_priority FROM notify.ent_notification WHERE id = $1", nid)
        assert level == 0
        deleted = await due()
        return (recomputed - before).total_seconds(), (deleted - before).total_seconds()
    finally:
        await repo.close()


async def test_deleting_a_priority_keeps_its_queued_rows_in_their_place(env: Env) -> None:
    url = env.settings.database_url.get_secret_value()  # type: ignore[union-attr]
    assert await _keeps_place(url, env.stack) == (0, 0)


async def test_on_the_original_schema_with_its_own_updated_at_trigger_queued_rows_keep_their_place(
    stack: Stack,
) -> None:
    """The original schema's trigger (base.set_updated_at) touches updated_at too; xnovu's, which runs after it,
    puts it back when the update must not move the row."""
    url = await original_database(stack)
    conn = await asyncpg.connect(url)
    try:
        await migrate(conn)
    finally:
        await conn.close()
    assert await _keeps_place(url, stack) == (0, 0)
