"""Priority and fair share in claims (issue 17, I8; docs/priority.md "Claims"), on the real stack.

Claim-level tests call `Repository.claim` on a real Postgres; the end-to-end ones run a worker against Temporal and
the Novu emulator. Each failed on the code before issue 17 (oldest first, a window shared by everything, a big row
counting every recipient).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from typing import Any

import pytest

from tests.support import Env, eventually
from xnovu.core.models import PollKind
from xnovu.db.queries import q
from xnovu.db.repository import ClaimLimits

A = "aaaaaaaa-0000-4000-8000-00000000000a"
B = "bbbbbbbb-0000-4000-8000-00000000000b"
LIMITS = ClaimLimits(max_rows=20, max_tokens=100)


async def _rows(
    env: Env, workflow: int, n: int, *, enterprise: str | None = None, priority: int | None = None,
    recipients: int = 1, status: str = "PENDING", attempts: int = 0, age_s: float = 0,
) -> list[int]:
    """`n` published rows in one statement (one due time each, oldest first by id)."""
    rows = await env.repo.pool.fetch(
        "INSERT INTO notify.ent_notification (name, publish_status, notification_workflow_id, payload, recipients,"
        " enterprise_id, typ_notification_priority_id, notification_status, attempts, next_attempt_at)"
        " SELECT 'n' || g, 'PUBLISH', $1, '{}'::jsonb,"
        " ARRAY(SELECT gen_random_uuid() FROM generate_series(1, $5)), $3::uuid, $4,"
        " $6::text::shared_types.notification_status, $7,"
        " CASE WHEN $6 = 'FAILED' THEN now() - make_interval(secs => $8) END"
        " FROM generate_series(1, $2) g ORDER BY g RETURNING id",
        workflow, n, enterprise, priority, recipients, status, attempts, age_s,
    )
    return [r["id"] for r in rows]


async def _priority(env: Env, name: str, sort_order: int) -> int:
    return int(await env.repo.pool.fetchval(
        "INSERT INTO notify.typ_notification_priority (name, sort_order, publish_status) VALUES ($1, $2, 'PUBLISH')"
        " RETURNING id", name, sort_order,
    ))


async def _claim(env: Env, kind: PollKind = PollKind.NEW, *, batch: int = 10, limits: ClaimLimits = LIMITS,
                 recoverable: list[int] | None = None) -> list[int]:
    got = await env.repo.claim(kind, batch_size=batch, lease_ms=600_000, limits=limits, recoverable=recoverable or [])
    return [c.notification_id for c in got.rows]


async def test_due_rows_are_claimed_highest_urgency_first_then_by_due_time(env: Env) -> None:
    wf = await env.workflow("welcome")
    urgent, low = await _priority(env, "fire-emergency", 10), await _priority(env, "digest", -5)
    normal = await _rows(env, wf, 3)
    lows = await _rows(env, wf, 2, priority=low)
    urgents = await _rows(env, wf, 2, priority=urgent)
    got = await env.repo.claim(PollKind.NEW, batch_size=4, lease_ms=600_000, limits=LIMITS)
    assert [c.notification_id for c in got.rows][:2] == urgents, "the poll starts the urgent children first"
    assert {c.notification_id for c in got.rows} == {*urgents, *normal[:2]}
    assert {c.notification_id: c.priority for c in got.rows} == {
        urgents[0]: 10, urgents[1]: 10, normal[0]: 0, normal[1]: 0
    }, "claimed rows carry their urgency"
    assert await _claim(env) == [normal[2], *lows]


async def test_an_urgent_row_committed_while_the_window_is_full_is_claimed_on_the_next_poll(env: Env) -> None:
    wf = await env.workflow("welcome")
    urgent = await _priority(env, "fire-emergency", 1)
    await _rows(env, wf, 30)
    filled = await _claim(env, batch=30)
    assert len(filled) == 20, "the window (20 rows) is full of normal work"
    full = await env.repo.claim(PollKind.NEW, batch_size=10, lease_ms=600_000, limits=LIMITS)
    assert full.rows == [] and full.capacity_limited, "nothing normal fits"
    assert full.urgent_room, "the claim reports the urgent window free: the poll chain does not back off long"
    [alarm] = await _rows(env, wf, 1, priority=urgent)
    got = await env.repo.claim(PollKind.NEW, batch_size=10, lease_ms=600_000, limits=LIMITS)
    assert [(c.notification_id, c.priority) for c in got.rows] == [(alarm, 1)]


async def test_a_backlog_of_one_enterprise_does_not_keep_another_waiting(env: Env) -> None:
    """A's 200 rows are older and fill the window; B's 10 rows, committed after, are claimed by the next claim (B is
    below its share) though A's in-flight work fills the window. Before: oldest first, B waited for A's backlog."""
    wf = await env.workflow("welcome")
    a = await _rows(env, wf, 200, enterprise=A)
    first = await _claim(env, batch=50)
    assert set(first) <= set(a) and len(first) == 20
    b = await _rows(env, wf, 10, enterprise=B)
    second = await _claim(env, batch=50)
    assert set(second) == set(b), "B gets its share beside A's full window; A gets nothing more"


async def test_enterprises_share_a_claim_by_weight(env: Env) -> None:
    wf = await env.workflow("welcome")
    a = set(await _rows(env, wf, 100, enterprise=A))
    b = set(await _rows(env, wf, 100, enterprise=B))
    env.repo.weights = {A: 3.0}
    got = await _claim(env, batch=40, limits=ClaimLimits(max_rows=100, max_tokens=1_000))
    assert Counter("A" if i in a else "B" if i in b else "?" for i in got) == {"A": 30, "B": 10}


async def test_rows_without_an_enterprise_are_one_group_among_the_enterprises(env: Env) -> None:
    wf = await env.workflow("welcome")
    none = set(await _rows(env, wf, 50))
    a = set(await _rows(env, wf, 50, enterprise=A))
    got = await _claim(env, batch=10, limits=ClaimLimits(max_rows=100, max_tokens=1_000))
    assert Counter("none" if i in none else "A" if i in a else "?" for i in got) == {"none": 5, "A": 5}


async def test_many_enterprises_are_read_in_a_bounded_rotating_walk(env: Env) -> None:
    """100 enterprises with due rows: each claim reads the heads of at most FAIR_ENTERPRISES of them (plus the
    oldest rows) and the walk moves on, so every enterprise is claimed within a few claims."""
    wf = await env.workflow("welcome")
    owners: dict[int, str] = {}
    for i in range(100):
        ent = str(uuid.UUID(int=i + 1))
        for nid in await _rows(env, wf, 3, enterprise=ent):
            owners[nid] = ent
    seen: set[str] = set()
    limits = ClaimLimits(max_rows=10_000, max_tokens=100_000)
    for _ in range(12):
        got = await _claim(env, batch=20, limits=limits)
        seen |= {owners[i] for i in got}
    assert len(seen) == 100, f"{len(seen)} of 100 enterprises claimed in 12 claims of 20"


async def test_a_claim_reads_about_the_same_with_5_000_enterprises_as_with_50(env: Env) -> None:
    """The heads read is a bounded walk (16 enterprises per urgency, rotating), one index range each: its buffers do
    not grow with the number of enterprises that have due rows."""
    import json

    wf = await env.workflow("welcome")

    async def heads_buffers(enterprises: int) -> int:
        await env.repo.pool.execute(
            "INSERT INTO notify.ent_notification (name, publish_status, notification_workflow_id, payload, recipients,"
            " enterprise_id) SELECT 'e' || g, 'PUBLISH', $1, '{}'::jsonb, ARRAY[gen_random_uuid()],"
            " ('00000000-0000-4000-8000-' || lpad((g % $2)::text, 12, '0'))::uuid FROM generate_series(1, 4 * $2) g",
            wf, enterprises,
        )
        await env.repo.pool.execute("VACUUM ANALYZE notify.ent_notification")
        async with env.repo.pool.acquire() as conn:
            tx = conn.transaction()
            await tx.start()
            try:
                plan = await conn.fetchval(
                    "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + q("heads_new"), 100, None, None, 16, 4
                )
            finally:
                await tx.rollback()
        top = (json.loads(plan) if isinstance(plan, str) else plan)[0]["Plan"]
        return int(top.get("Shared Hit Blocks", 0)) + int(top.get("Shared Read Blocks", 0))

    few = await heads_buffers(50)
    await env.execute("DELETE FROM notify.ent_notification")
    many = await heads_buffers(5_000)
    print(f"\nheads_new: {few} buffers with 50 enterprises, {many} with 5 000")
    assert many <= 2 * few + 20, f"{many} buffers with 5 000 enterprises against {few} with 50"


async def test_a_big_row_in_flight_counts_only_its_untried_recipients_and_at_most_half_the_window(env: Env) -> None:
    wf = await env.workflow("welcome")
    [big] = await _rows(env, wf, 1, recipients=1_000)
    assert await _claim(env) == [big]
    flight = await env.repo.pool.fetchrow(q("claim_flight"), 600_000, None, LIMITS.row_cap, None, None, 0)
    assert flight is not None and [g["tokens"] for g in flight["groups"]] == [50], "half the window, not 1 000"
    small = await _rows(env, wf, 5)
    assert await _claim(env) == small, "claimed beside the big row"
    piece = await env.repo.pool.fetchval("SELECT xnovu_piece FROM notify.ent_notification WHERE id = $1", big)
    assert await env.repo.close_piece(big, piece, resolved=True, tokens=7)
    flight = await env.repo.pool.fetchrow(q("claim_flight"), 600_000, None, LIMITS.row_cap, None, None, 0)
    assert flight is not None and sum(g["tokens"] for g in flight["groups"]) == 7 + 5


async def test_a_worker_scoped_to_one_enterprise_claims_only_its_rows(env: Env) -> None:
    """POLL_ENTERPRISE_ID narrows the walk of groups to that enterprise (an index range, not a filter)."""
    wf = await env.workflow("welcome")
    urgent = await _priority(env, "fire-emergency", 1)
    await _rows(env, wf, 5)
    await _rows(env, wf, 5, enterprise=A, priority=urgent)
    mine = await _rows(env, wf, 5, enterprise=B)
    mine_urgent = await _rows(env, wf, 2, enterprise=B, priority=urgent)
    got = await env.repo.claim(PollKind.NEW, batch_size=10, lease_ms=600_000, limits=LIMITS, enterprise_id=B)
    assert [c.notification_id for c in got.rows] == [*mine_urgent, *mine], "fanned out most urgent first"
    assert {c.notification_id for c in got.rows if c.priority == 1} == set(mine_urgent)


async def test_held_rows_stay_held_whatever_their_urgency(env: Env) -> None:
    wf = await env.workflow("drafted")
    urgent = await _priority(env, "fire-emergency", 5)
    [held] = await _rows(env, wf, 1, priority=urgent, enterprise=A)
    await env.execute("UPDATE notify.ent_notification_workflow SET publish_status = 'DRAFT' WHERE id = $1", wf)
    assert await _claim(env) == []
    await env.repo.hold_sweep()
    assert await _claim(env) == []
    assert (await env.row(held))["status"] == "PENDING"


async def test_concurrent_claims_never_take_a_row_twice(env: Env) -> None:
    wf = await env.workflow("welcome")
    urgent = await _priority(env, "fire-emergency", 2)
    ids = [*await _rows(env, wf, 40, enterprise=A), *await _rows(env, wf, 40, enterprise=B, priority=urgent)]
    limits = ClaimLimits(max_rows=1_000, max_tokens=10_000)
    claims = await asyncio.gather(*(_claim(env, batch=10, limits=limits) for _ in range(8)))
    flat = [i for c in claims for i in c]
    assert len(flat) == len(set(flat)) == 80 and set(flat) == set(ids)
    attempts = await env.repo.pool.fetch(
        "SELECT attempts FROM notify.ent_notification WHERE id = ANY($1::bigint[])", ids
    )
    assert {r["attempts"] for r in attempts} == {1}, "one attempt each (I4)"


async def test_retries_get_a_share_beside_new_work_that_fills_the_window(env: Env) -> None:
    wf = await env.workflow("welcome")
    await _rows(env, wf, 60)
    assert len(await _claim(env, batch=60)) == 20, "new work fills the window"
    retries = await _rows(env, wf, 30, status="FAILED", attempts=1, age_s=60)
    got = await _claim(env, PollKind.FAILED, batch=30)
    assert len(got) == 10 and set(got) <= set(retries), "half the window: the retry lane's share beside new work"


async def test_changing_a_priority_or_the_order_recomputes_queued_rows_and_keeps_their_place(env: Env) -> None:
    wf = await env.workflow("welcome")
    p = await _priority(env, "reminder", 3)
    queued = await _rows(env, wf, 3, priority=p)
    [sent] = await _rows(env, wf, 1, priority=p, status="SENT")
    before = {r["id"]: r["updated_at"] for r in await env.repo.pool.fetch(
        "SELECT id, updated_at FROM notify.ent_notification WHERE id = ANY($1::bigint[])", queued)}

    async def levels() -> dict[int, int]:
        rows = await env.repo.pool.fetch(
            "SELECT id, xnovu_priority FROM notify.ent_notification WHERE id = ANY($1::bigint[])", [*queued, sent]
        )
        return {r["id"]: r["xnovu_priority"] for r in rows}

    assert set((await levels()).values()) == {3}
    await env.execute("UPDATE notify.typ_notification_priority SET sort_order = 7 WHERE id = $1", p)
    assert set((await levels()).values()) == {3}, "recomputed after the change, not in its transaction"
    assert await env.repo.recompute_priorities(batch=2) == 3
    got = await levels()
    assert [got[i] for i in queued] == [7, 7, 7] and got[sent] == 3, "queued rows follow, history stays"
    state, changed = await env.repo.set_priority_order(higher_first=False, normal=5, batch=2)
    assert (state["higher_first"], state["normal_sort_order"], changed) == (False, 5, 3)
    got = await levels()
    assert [got[i] for i in queued] == [-2, -2, -2]
    after = {r["id"]: r["updated_at"] for r in await env.repo.pool.fetch(
        "SELECT id, updated_at FROM notify.ent_notification WHERE id = ANY($1::bigint[])", queued)}
    assert after == before, "a queued row keeps its place (updated_at is its due time)"
    [new] = await _rows(env, wf, 1, priority=p)
    assert (await env.row(new))["xnovu_priority"] == -2, "a row inserted now gets the new rule"
    await env.repo.set_priority_order(higher_first=True, normal=0)


async def test_the_db_priority_command_shows_and_sets_the_order(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from xnovu.cli import app

    monkeypatch.setenv("DATABASE_URL", env.settings.database_url.get_secret_value())  # type: ignore[union-attr]
    runner = CliRunner()

    async def invoke(*args: str) -> Any:
        return await asyncio.to_thread(runner.invoke, app, list(args))

    shown = await invoke("db", "priority")
    assert shown.exit_code == 0 and "higher-first, normal sort_order 0" in shown.output, shown.output
    changed = await invoke("db", "priority", "set", "--order", "lower-first", "--normal", "3")
    assert changed.exit_code == 0 and "lower-first, normal sort_order 3" in changed.output, changed.output
    bad = await invoke("db", "priority", "set", "--order", "sideways")
    assert bad.exit_code != 0 and "higher-first or lower-first" in str(bad.exception or bad.output)


# -- end to end --------------------------------------------------------------------------------------------------


async def test_on_the_real_stack_small_rows_are_sent_while_a_big_one_is_still_sending(env: Env) -> None:
    """A 1 500-recipient row at 100 tokens/s (a window of 1 000 tokens) takes about 15 s. Rows committed after it
    started are claimed beside it and sent within seconds, their requests taking turns for tokens with the big row's
    (FairTurns); before, the big row counted 3 000 tokens and every other claim waited for its whole send."""
    wf = await env.workflow("welcome")
    [big] = await env.insert(wf, recipients=1_500)
    async with env.worker(novu_rate_limit_rps=100, poll_interval_ms=1_000, processing_lease_ms=120_000):
        await eventually(lambda: env.all_in([big], "PROCESSING"), timeout=20, interval=0.2)
        await asyncio.sleep(2)
        started = time.monotonic()
        small = await env.insert(wf, 5)
        await eventually(lambda: env.all_in(small, "PROCESSING", "SENT"), timeout=25, interval=0.1)
        claimed = time.monotonic() - started
        await eventually(lambda: env.all_in(small, "SENT"), timeout=25, interval=0.2)
        took = time.monotonic() - started
        still = (await env.row(big))["status"]
        print(f"\nsmall rows claimed {claimed:.1f} s and sent {took:.1f} s after commit; big row {still}")
        assert claimed < 5, "claimed beside the big row at the next poll"
        assert took < 6, "their requests take turns for tokens with the big row's, instead of queueing behind them"
        assert still == "PROCESSING", "the small rows did not wait for the big one"
        await eventually(lambda: env.all_in([big], "SENT"), timeout=90, interval=0.5)
    assert env.stats()["duplicate_deliveries"] == 0


async def test_on_the_real_stack_retries_are_sent_under_sustained_new_load(env: Env) -> None:
    """New rows arrive faster than Novu's budget (40 rows/s against 20 tokens/s, each commit waking the new poll) for
    the whole test, so the window (25 rows) stays full; 10 FAILED rows are due. Before, the failed poll found the
    window full, backed off (up to 8 s) while the new chain took every freed place as soon as it freed: the retries
    waited for the load to stop. Now the retry lane has its share beside new work: sent within a bounded time."""
    wf = await env.workflow("welcome")
    retries = await _rows(env, wf, 10, status="FAILED", attempts=1, age_s=1)
    stop = asyncio.Event()

    async def load() -> None:
        while not stop.is_set():
            await env.insert(wf, 4)
            await asyncio.sleep(0.1)

    async with env.worker(
        novu_rate_limit_rps=20, poll_batch_size=5, poll_interval_ms=1_000, failed_poll_interval_ms=2_000,
        processing_lease_ms=120_000,
    ):
        producer = asyncio.create_task(load())
        try:
            started = time.monotonic()
            await eventually(lambda: env.all_in(retries, "SENT"), timeout=20, interval=0.5)
            took = time.monotonic() - started
            backlog = await env.repo.pool.fetchval(
                "SELECT count(*) FROM notify.ent_notification WHERE notification_status = 'PENDING'"
            )
        finally:
            stop.set()
            await producer
    print(f"\n10 retries sent within {took:.1f} s under sustained load ({backlog} new rows still queued)")
    assert backlog > 0, "the load was sustained throughout"


@pytest.mark.parametrize("higher_first", [True, False])
async def test_the_urgency_rule_in_the_database_matches_the_pure_one(env: Env, higher_first: bool) -> None:
    from xnovu.core.priority import PriorityOrder, urgency

    order = PriorityOrder.HIGHER_FIRST if higher_first else PriorityOrder.LOWER_FIRST
    await env.execute("UPDATE notify.xnovu_priority_order SET higher_first = $1, normal_sort_order = 2", higher_first)
    for sort_order in (None, -3, 0, 2, 9):
        got = await env.repo.pool.fetchval("SELECT notify.xnovu_urgency($1)", sort_order)
        assert got == urgency(sort_order, order=order, normal=2), sort_order


async def test_on_the_real_stack_an_urgent_row_and_another_enterprise_overtake_a_backlog(env: Env) -> None:
    """Enterprise A commits 300 rows at 20 tokens/s (15 s of sending); a few seconds in, B commits one urgent and
    three normal rows. Both are sent long before A's backlog drains (oldest first, before, B waited for all of it).
    The latency includes the poll chain's capacity back-off (at most CAPACITY_WAIT_MAX): while the window is full a
    commit's wake-up waits for the chain's next claim."""
    wf = await env.workflow("welcome")
    urgent = await _priority(env, "fire-emergency", 1)
    a = await _rows(env, wf, 300, enterprise=A)
    async with env.worker(novu_rate_limit_rps=20, poll_batch_size=5, poll_interval_ms=1_000,
                          processing_lease_ms=120_000):
        await asyncio.sleep(4)
        started = time.monotonic()
        [alarm] = await _rows(env, wf, 1, enterprise=B, priority=urgent)
        b = await _rows(env, wf, 3, enterprise=B)
        await eventually(lambda: env.all_in([alarm], "SENT"), timeout=30, interval=0.1)
        urgent_s = time.monotonic() - started
        await eventually(lambda: env.all_in(b, "SENT"), timeout=30, interval=0.1)
        normal_s = time.monotonic() - started
        left = sum(1 for st in (await env.statuses(a)).values() if st != "SENT")
    print(f"\nB's urgent row sent {urgent_s:.1f} s after commit, B's normal rows {normal_s:.1f} s; A had {left} of 300"
          " rows still to send")
    assert left > 100, "B did not wait for A's backlog"


async def _poll_chain(client: Any, kind: PollKind = PollKind.NEW) -> Any:
    """The running poll chain of `kind` (a Schedule-started workflow; continue-as-new keeps its id)."""
    from xnovu.core.models import schedule_id

    async def find() -> Any:
        query = "WorkflowType = 'PollNotificationsWorkflow' AND ExecutionStatus = 'Running'"
        ids = [w.id async for w in client.list_workflows(query) if w.id.startswith(schedule_id(kind))]
        return client.get_workflow_handle(ids[0]) if ids else None

    return await eventually(find, timeout=20, interval=0.2)


async def test_on_the_real_stack_an_urgent_row_committed_during_the_capacity_back_off_wakes_the_chain_at_once(
    env: Env,
) -> None:
    """Two rows of 120 recipients each count half the token window (200 tokens at 20 tokens/s), so the normal
    window is full for about 12 s while ten single rows of A wait: the new poll chain claims nothing and backs off. A
    commit's wake-up trigger only buffers a run behind the running chain, so an urgent row committed during the back-off
    waited for it: up to 8 s at first, then up to URGENT_ROOM_WAIT (1 s). Now the commit also notifies 'urgent'
    (migration 0015) and a worker signals the chain, whose back-off ends at once: the run that was waiting records the
    signal and no fired timer. The chain runs on the poll queue, so its tasks never wait behind the children's."""
    from temporalio.api.enums.v1 import EventType

    wf = await env.workflow("welcome")
    urgent = await _priority(env, "fire-emergency", 1)
    big = await _rows(env, wf, 2, enterprise=A, recipients=120)
    waiting = await _rows(env, wf, 10, enterprise=A)
    async with env.worker(novu_rate_limit_rps=20, poll_batch_size=5, poll_interval_ms=1_000,
                          processing_lease_ms=120_000) as manager:
        await eventually(lambda: env.all_in(big, "PROCESSING"), timeout=20, interval=0.2)
        chain = await _poll_chain(manager.client)

        async def backing_off() -> Any:
            """The chain's current run, once it has started its back-off timer (claimed nothing: window full)."""
            handle = manager.client.get_workflow_handle(chain.id)
            events = [e.event_type async for e in handle.fetch_history_events()]
            if EventType.EVENT_TYPE_TIMER_STARTED in events and EventType.EVENT_TYPE_TIMER_FIRED not in events:
                return (await handle.describe()).run_id
            return None

        run = await eventually(backing_off, timeout=20, interval=0.02)
        started = time.monotonic()
        [alarm] = await _rows(env, wf, 1, enterprise=B, priority=urgent)
        await eventually(lambda: env.all_in([alarm], "SENT"), timeout=20, interval=0.05)
        took = time.monotonic() - started
        held_back = await env.all_in(waiting, "PENDING")
        woken = [e.event_type async for e in manager.client.get_workflow_handle(chain.id, run_id=run)
                 .fetch_history_events()]
        assert manager.wakeup is not None
        signals = manager.wakeup.urgent_signals_sent
        # Measured. The big rows have about 8 s of sending left, which the worker's graceful stop would wait for:
        # retracted, their sends stop at the next fence.
        for nid in big:
            await env.repo.retract(nid, "the test is done")
    print(f"\nurgent row committed during the capacity back-off sent {took:.2f} s after commit ({signals} signal)")
    assert held_back, "the normal window stayed full throughout"
    assert EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED in woken, "the waiting run was signalled"
    assert EventType.EVENT_TYPE_TIMER_FIRED not in woken, "its back-off ended on the signal, not on its timer"
    assert took <= 2.0, f"{took:.1f} s"


async def test_send_order_oldest_first_claims_in_due_order_in_one_window_and_without_priority(env: Env) -> None:
    """SEND_ORDER=oldest-first, the comparison mode of the bench's noisy-neighbour phase (docs/performance.md): due
    order whatever the urgency or enterprise, one window for everything, claimed rows carry no priority."""
    from xnovu.db.repository import Repository

    wf = await env.workflow("welcome")
    urgent = await _priority(env, "fire-emergency", 1)
    a = await _rows(env, wf, 25, enterprise=A)
    alarm = await _rows(env, wf, 2, enterprise=B, priority=urgent)
    oldest = Repository(env.repo.pool, oldest_first=True)
    first = await oldest.claim(PollKind.NEW, batch_size=30, lease_ms=600_000, limits=LIMITS)
    assert [c.notification_id for c in first.rows] == a[:20], "A's oldest rows fill the one window"
    assert all(c.priority == 0 for c in first.rows) and not first.urgent_room
    again = await oldest.claim(PollKind.NEW, batch_size=30, lease_ms=600_000, limits=LIMITS)
    assert again.rows == [] and again.capacity_limited, "the urgent rows wait behind A's: no window of their own"
    fair = await env.repo.claim(PollKind.NEW, batch_size=30, lease_ms=600_000, limits=LIMITS)
    assert [c.notification_id for c in fair.rows][:2] == alarm, "SEND_ORDER=priority (the default) takes them"


async def test_send_order_oldest_first_serves_the_token_budget_first_come(env: Env) -> None:
    from xnovu.db.budget import PostgresTokenBudget

    budget = PostgresTokenBudget(env.repo.pool, 50, capacity=10, fifo=True)
    await budget.acquire(10)
    served: list[str] = []

    async def one(name: str, urgency: int) -> None:
        await budget.acquire(1, urgency=urgency, enterprise=A if urgency == 0 else B, notification=name)
        served.append(name)

    normal = [asyncio.create_task(one(f"n{i}", 0)) for i in range(20)]
    await asyncio.sleep(0.05)
    await asyncio.gather(one("urgent", 2), *normal)
    assert served[-1] == "urgent", "first come, first served: the urgent request waits its turn"
