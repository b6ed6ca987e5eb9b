"""What a claim reads of the due rows (docs/priority.md "Claims"): the walk of (urgency, enterprise) groups, its
cursors, the level list and the urgent read, and held retries (docs/design.md "Held rows"), on the real Postgres.

Each test failed before its fix (review of issue 17, findings 1, 2, 3 and 12). Fixtures of test_priority_claims.py.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import pytest

from tests.integration.test_priority_claims import _claim, _priority, _rows
from tests.support import Env
from xnovu.core.models import PollKind
from xnovu.db.queries import q
from xnovu.db.repository import ClaimLimits

N = "aaaaaaaa-0000-4000-8000-00000000000a"  # the noisy enterprise, a backlog older than anyone's
X = "ffffffff-0000-4000-8000-00000000000f"  # a quiet enterprise, one row; its id sorts after every other
BIG = ClaimLimits(max_rows=10_000, max_tokens=100_000)  # windows that never refuse: only what is read matters


def _ent(i: int) -> str:
    """An enterprise id that sorts before N and X."""
    return str(uuid.UUID(int=i + 1))


async def _claims_until(env: Env, kind: PollKind, target: int, *, most: int = 12) -> int:
    """How many claims of 10 rows of `kind` it took to claim `target` (most + 1: never)."""
    for i in range(1, most + 1):
        if target in await _claim(env, kind, batch=10, limits=BIG):
            return i
    return most + 1


async def _scheduled(env: Env, wf: int, n: int, enterprise: str | None, at_s: float, priority: int | None = None
                     ) -> list[int]:
    """`n` rows scheduled `at_s` seconds from now (negative: due), one second apart, oldest first by id."""
    rows = await env.repo.pool.fetch(
        "INSERT INTO notify.ent_notification (name, publish_status, notification_workflow_id, payload, recipients,"
        " enterprise_id, typ_notification_priority_id, scheduled_for) SELECT 's' || g, 'PUBLISH', $1, '{}'::jsonb,"
        " ARRAY[gen_random_uuid()], $3::uuid, $5, now() + make_interval(secs => $4 + g)"
        " FROM generate_series(1, $2) g ORDER BY g RETURNING id",
        wf, n, enterprise, at_s, priority,
    )
    return [r["id"] for r in rows]


# -- the walk and its cursors (findings 1 and 3) ---------------------------------------------------------------------


@pytest.mark.parametrize("how", ["backing-off", "in-flight"])
async def test_a_due_retry_is_claimed_at_once_beside_enterprises_with_nothing_due(env: Env, how: str) -> None:
    """16 enterprises of lower id have a FAILED row backing off, or a row in flight (any busy deployment): the walk
    skips them (one index probe each) and still reaches X, whose one due retry gets its share at the first failed
    claim, though N's 30 retries are older. Before: the walk spent its 16 enterprises on them, the cursor restarted,
    and X waited for N's backlog (claim #4)."""
    wf = await env.workflow("welcome")
    for i in range(16):
        if how == "backing-off":
            await _rows(env, wf, 1, enterprise=_ent(i), status="FAILED", attempts=1, age_s=-3600)
        else:
            await _rows(env, wf, 1, enterprise=_ent(i))
    if how == "in-flight":
        assert len(await _claim(env, batch=16, limits=BIG)) == 16
    await _rows(env, wf, 30, enterprise=N, status="FAILED", attempts=1, age_s=60)
    [x] = await _rows(env, wf, 1, enterprise=X, status="FAILED", attempts=1, age_s=1)
    assert await _claims_until(env, PollKind.FAILED, x) == 1


async def test_a_due_scheduled_row_is_claimed_at_once_beside_enterprises_scheduled_next_week(env: Env) -> None:
    wf = await env.workflow("welcome")
    for i in range(16):
        await _scheduled(env, wf, 1, _ent(i), 7 * 86_400)
    await _scheduled(env, wf, 30, N, -120)
    [x] = await _scheduled(env, wf, 1, X, -5)
    assert await _claims_until(env, PollKind.SCHEDULED, x) == 1


async def test_the_walk_moves_past_enterprises_with_nothing_due_instead_of_restarting(env: Env) -> None:
    """80 enterprises with retries backing off, more than one claim's walk probes: the cursor moves past those it
    probed, so X's due retry is reached by the third failed claim; N's 100 older retries alone would keep it for 11."""
    wf = await env.workflow("welcome")
    for i in range(80):
        await _rows(env, wf, 1, enterprise=_ent(i), status="FAILED", attempts=1, age_s=-3600)
    await _rows(env, wf, 100, enterprise=N, status="FAILED", attempts=1, age_s=60)
    [x] = await _rows(env, wf, 1, enterprise=X, status="FAILED", attempts=1, age_s=1)
    assert await _claims_until(env, PollKind.FAILED, x) <= 3


async def test_urgent_rows_are_claimed_before_normal_ones_when_many_enterprises_have_both(env: Env) -> None:
    """20 enterprises have one urgent row each, 16 others (higher ids) normal rows. Each urgency has its own cursor:
    the second claim's urgent walk goes on from the first's, not from the highest enterprise walked at any level."""
    wf = await env.workflow("welcome")
    urgent = await _priority(env, "fire-emergency", 1)
    for i in range(16):
        await _rows(env, wf, 2, enterprise=str(uuid.UUID(int=(0x80 << 120) + i)))
    urgents: set[int] = set()
    for i in range(20):
        urgents |= set(await _rows(env, wf, 1, enterprise=_ent(i), priority=urgent))
    first = await _claim(env, batch=10, limits=BIG)
    second = await _claim(env, batch=10, limits=BIG)
    assert set(first) <= urgents and len(first) == 10
    assert set(second) == urgents - set(first), "normal rows claimed while urgent rows are due"


# -- the level list and the urgent read (finding 2) -------------------------------------------------------------------


async def test_an_urgent_scheduled_row_is_claimed_before_older_normal_ones_whatever_is_scheduled_later(
    env: Env,
) -> None:
    """Four higher urgencies have rows next week only: the level list takes levels with something due, so the due
    urgency-1 row is read and claimed first, though 30 normal rows are older. Before: the four levels filled the
    list (FAIR_LEVELS) and the normal rows were claimed before it."""
    wf = await env.workflow("welcome")
    levels = {s: await _priority(env, f"p{s}", s) for s in (1, 2, 3, 4, 5)}
    for s in (2, 3, 4, 5):
        await _scheduled(env, wf, 1, None, 7 * 86_400, levels[s])
    await _scheduled(env, wf, 30, None, -150)
    [urgent] = await _scheduled(env, wf, 1, None, -6, levels[1])
    got = await _claim(env, PollKind.SCHEDULED, batch=10, limits=BIG)
    assert urgent in got, "a due urgent row waits while older normal rows are claimed"


async def test_a_worker_scoped_to_an_enterprise_claims_its_urgent_row_before_its_older_normal_ones(env: Env) -> None:
    """POLL_ENTERPRISE_ID=B: the level list is B's levels with something due, not everyone's (N's rows at four higher
    urgencies took all four before)."""
    wf = await env.workflow("welcome")
    b = "bbbbbbbb-0000-4000-8000-00000000000b"
    levels = {s: await _priority(env, f"p{s}", s) for s in (1, 2, 3, 4, 5)}
    for s in (2, 3, 4, 5):
        await _rows(env, wf, 1, enterprise=N, priority=levels[s])
    await _rows(env, wf, 30, enterprise=b)
    [urgent] = await _rows(env, wf, 1, enterprise=b, priority=levels[1])
    got = await env.repo.claim(PollKind.NEW, batch_size=10, lease_ms=600_000, limits=BIG, enterprise_id=b)
    ids = [c.notification_id for c in got.rows]
    assert ids[0] == urgent and len(ids) == 10


async def test_the_oldest_rows_of_the_highest_urgency_are_read_wherever_the_walk_is(env: Env) -> None:
    """40 enterprises have one urgent row each, the oldest in the highest enterprise ids, beyond the first walk's 16,
    and a normal backlog is older still: the urgent read (the highest urgency's oldest due rows, 0013's index) brings
    them in, so the first claim takes the 10 oldest urgent rows. Without it the walk's 16 (the newest) were the only
    urgent rows read."""
    wf = await env.workflow("welcome")
    urgent = await _priority(env, "fire-emergency", 1)
    backlog = await _rows(env, wf, 30, enterprise=N)
    ids = [(await _rows(env, wf, 1, enterprise=_ent(i), priority=urgent))[0] for i in range(40)]
    async with env.repo.pool.acquire() as conn, conn.transaction():
        await conn.execute("SET LOCAL session_replication_role = replica")  # the due times below, no touch trigger
        await conn.execute(
            "UPDATE notify.ent_notification SET updated_at = now() - interval '1 day' WHERE id = ANY($1)", backlog
        )
        await conn.execute("UPDATE notify.ent_notification SET updated_at = now() - make_interval(secs => id)"
                           " WHERE id = ANY($1)", ids)
    got = await _claim(env, batch=10, limits=BIG)
    assert set(got) == set(ids[-10:]), "the oldest urgent rows, whoever's they are"


# -- held retries (finding 12) ----------------------------------------------------------------------------------------


async def _buffers(env: Env, name: str, *args: Any) -> int:
    async with env.repo.pool.acquire() as conn:
        tx = conn.transaction()
        await tx.start()
        try:
            plan = await conn.fetchval("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + q(name), *args)
        finally:
            await tx.rollback()
    top = (json.loads(plan) if isinstance(plan, str) else plan)[0]["Plan"]
    return int(top.get("Shared Hit Blocks", 0)) + int(top.get("Shared Read Blocks", 0))


async def test_retries_of_a_paused_workflow_are_not_read_by_every_failed_claim(env: Env) -> None:
    """20 000 due retries of a workflow its owner paused (DRAFT): the hold sweep marks them, and the retry indexes
    leave marked rows out, so neither the oldest read nor the walk of a failed claim reads them (before: 528 and 538
    buffers under the claim lock, growing with them)."""
    paused = await env.workflow("paused")
    live = await env.workflow("welcome")
    await _rows(env, paused, 20_000, enterprise=N, status="FAILED", attempts=1, age_s=600)
    [retry] = await _rows(env, live, 1, enterprise=N, status="FAILED", attempts=1, age_s=1)
    await env.execute("UPDATE notify.ent_notification_workflow SET publish_status = 'DRAFT' WHERE id = $1", paused)
    while (await env.repo.hold_sweep(limit=20_000))[0]:
        pass
    await env.repo.pool.execute("VACUUM ANALYZE notify.ent_notification")
    oldest = await _buffers(env, "candidates_failed", 100, None, 600_000, [])
    heads = await _buffers(env, "heads_failed", 100, None, None, 16, 4)
    print(f"\n20 000 held retries: candidates_failed {oldest} buffers, heads_failed {heads}")
    assert await _claim(env, PollKind.FAILED, batch=100, limits=BIG) == [retry]
    assert oldest < 100 and heads < 100, f"candidates_failed {oldest} buffers, heads_failed {heads}"


async def test_a_held_retry_is_marked_and_comes_back_when_its_workflow_is_published_again(env: Env) -> None:
    """The mark is a hint: before the sweep the claim leaves the retry of a DRAFT workflow alone by checking the
    workflow; the sweep then marks it, and unmarks it when the workflow is published again, and it is retried."""
    wf = await env.workflow("paused")
    [retry] = await _rows(env, wf, 1, status="FAILED", attempts=1, age_s=60)
    await env.execute("UPDATE notify.ent_notification_workflow SET publish_status = 'DRAFT' WHERE id = $1", wf)
    assert await _claim(env, PollKind.FAILED) == [], "the claim checks the workflow, marked or not"
    assert await env.repo.hold_sweep() == (1, 0)
    assert (await env.row(retry))["held_at"] is not None
    assert await _claim(env, PollKind.FAILED) == []
    await env.execute("UPDATE notify.ent_notification_workflow SET publish_status = 'PUBLISH' WHERE id = $1", wf)
    assert await env.repo.hold_sweep() == (0, 1)
    assert await _claim(env, PollKind.FAILED) == [retry]
    assert (await env.row(retry))["attempts"] == 2


async def test_a_claim_reads_heads_of_few_enterprises_whatever_how_many_have_nothing_due(env: Env) -> None:
    """The walk's probes are bounded: 2 000 enterprises with retries backing off cost a failed claim's walk about
    what 40 do (32 probes at most per urgency, then the cursor moves on)."""
    wf = await env.workflow("welcome")

    async def cost(enterprises: int) -> int:
        await env.repo.pool.execute(
            "INSERT INTO notify.ent_notification (name, publish_status, notification_workflow_id, payload, recipients,"
            " enterprise_id, notification_status, attempts, next_attempt_at) SELECT 'b', 'PUBLISH', $1, '{}'::jsonb,"
            " ARRAY[gen_random_uuid()], ('00000000-0000-4000-8000-' || lpad(g::text, 12, '0'))::uuid, 'FAILED', 1,"
            " now() + interval '1 hour' FROM generate_series(1, $2) g", wf, enterprises,
        )
        await env.repo.pool.execute("VACUUM ANALYZE notify.ent_notification")
        return await _buffers(env, "heads_failed", 100, None, None, 16, 4)

    started = time.monotonic()
    few = await cost(40)
    await env.execute("DELETE FROM notify.ent_notification")
    many = await cost(2_000)
    print(f"\nheads_failed: {few} buffers with 40 enterprises backing off, {many} with 2 000 "
          f"({time.monotonic() - started:.1f} s)")
    assert many <= 2 * few + 20
