"""Wake-ups: a commit that makes rows PENDING triggers the poll schedule, so delivery does not wait for a tick.

Real Postgres (the migration's statement triggers, a real LISTEN connection), real Temporal dev server (the
schedules' own trigger and paused state), real HTTP emulator. Poll intervals of an hour make sure that only a
wake-up can explain a quick delivery.
"""

from __future__ import annotations

import asyncio
import logging
import os
import statistics
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from pydantic import SecretStr

from tests.support import DB_PASSWORD, Env, eventually
from xnovu.core.models import PollKind
from xnovu.db.repository import database_url
from xnovu.temporal.schedules import schedule_id, set_paused
from xnovu.worker.manager import WorkerManager
from xnovu.worker.wakeup import CHANNEL, WakeupListener

HOUR_MS = 3_600_000
#: Every schedule ticks hourly: a notification SENT within seconds was woken, not polled.
NO_TICKS = {"poll_interval_ms": HOUR_MS, "failed_poll_interval_ms": HOUR_MS, "scheduled_poll_interval_ms": HOUR_MS}


@asynccontextmanager
async def listening(env: Env) -> AsyncIterator[tuple[asyncpg.Connection, list[str]]]:
    """A raw LISTEN connection on the wake-up channel, collecting payloads in order."""
    conn = await asyncpg.connect(database_url(env.settings))
    received: list[str] = []
    await conn.add_listener(CHANNEL, lambda _c, _pid, _ch, payload: received.append(payload))
    try:
        yield conn, received
    finally:
        await conn.close()


async def notifications_of(env: Env, received: list[str], statement: str, *args: Any) -> list[str]:
    """What one statement notified: a marker notified after it arrives last (NOTIFY keeps commit order)."""
    before = len(received)
    await env.execute(statement, *args)
    await env.execute("SELECT pg_notify($1, 'marker')", CHANNEL)
    await eventually(lambda: _has_marker(received, before), timeout=10, interval=0.02)
    return received[before:-1]


async def _has_marker(received: list[str], before: int) -> bool:
    return "marker" in received[before:]


def listener(manager: WorkerManager) -> WakeupListener:
    assert manager.wakeup is not None
    return manager.wakeup


async def schedule_actions(manager: WorkerManager, kind: PollKind = PollKind.NEW) -> tuple[int, int]:
    """(actions taken so far, actions running now) of one poll schedule, as Temporal reports them."""
    assert manager.client is not None
    d = await manager.client.get_schedule_handle(schedule_id(kind)).describe()
    return d.info.num_actions, len(d.info.running_actions)


async def settled(manager: WorkerManager) -> bool:
    """Listening, the start-up catch-up wake-ups sent and their poll runs finished: a quiet baseline."""
    w = listener(manager)
    if w.state != "connected" or w.pending:
        return False
    for kind in (PollKind.NEW, PollKind.SCHEDULED):
        taken, running = await schedule_actions(manager, kind)
        if taken < 1 or running:
            return False
    return True


async def test_one_statement_sends_one_wakeup_whatever_the_number_of_rows(env: Env) -> None:
    wf = await env.workflow("welcome")
    async with listening(env) as (_, received):
        got = await notifications_of(
            env,
            received,
            "INSERT INTO notify.ent_notification (name, publish_status, notification_workflow_id, payload, recipients)"
            " SELECT 'n' || i, 'PUBLISH', $1, '{}'::jsonb, ARRAY[gen_random_uuid()] FROM generate_series(1, 100) i",
            wf,
        )
        assert got == ["new"], "100 rows inserted by one statement: one notification, not one per row"

        got = await notifications_of(
            env,
            received,
            "INSERT INTO notify.ent_notification (name, publish_status, notification_workflow_id, payload, recipients,"
            " scheduled_for) SELECT 's' || i, 'PUBLISH', $1, '{}'::jsonb, ARRAY[gen_random_uuid()],"
            " now() + interval '1 minute' FROM generate_series(1, 50) i",
            wf,
        )
        assert got == ["scheduled"], "future send times wake the scheduled poll"

        got = await notifications_of(
            env, received, "UPDATE notify.ent_notification SET publish_status = 'DRAFT' WHERE name LIKE 'n%'"
        )
        assert got == [], "unpublishing makes nothing sendable"
        got = await notifications_of(
            env, received, "UPDATE notify.ent_notification SET publish_status = 'PUBLISH' WHERE name LIKE 'n%'"
        )
        assert got == ["new"], "republishing 100 PENDING rows: one notification"

        # What xnovu itself does to rows: claims (PENDING -> PROCESSING), gives one back (PROCESSING -> PENDING,
        # it must not be sent now), dead-letters: none of it wakes anyone, or a held row would loop.
        got = await notifications_of(
            env, received, "UPDATE notify.ent_notification SET notification_status = 'PROCESSING' WHERE name LIKE 'n%'"
        )
        assert got == []
        got = await notifications_of(
            env, received, "UPDATE notify.ent_notification SET notification_status = 'PENDING' WHERE name = 'n1'"
        )
        assert got == [], "a row given back by a claim does not wake the poll"
        got = await notifications_of(
            env,
            received,
            "UPDATE notify.ent_notification SET notification_status = 'FAILED', dead_lettered_at = now()"
            " WHERE name LIKE 'n%'",
        )
        assert got == []

        ids = [r["id"] for r in await env.repo.pool.fetch("SELECT id FROM notify.ent_notification")]
        before = len(received)
        assert len(await env.repo.dlq_requeue(ids)) == 100
        await eventually(lambda: _count(received, before, 1), timeout=10, interval=0.02)
        assert received[before:] == ["new"], "requeueing 100 dead-lettered rows: one notification"

        got = await notifications_of(
            env,
            received,
            "INSERT INTO notify.ent_notification (name, publish_status, notification_workflow_id,"
            " payload, recipients) VALUES ('d', 'DRAFT', $1, '{}'::jsonb, ARRAY[gen_random_uuid()])",
            wf,
        )
        assert got == [], "a DRAFT notification is not sendable"


async def _count(received: list[str], before: int, n: int) -> bool:
    return len(received) - before >= n


async def test_an_insert_is_sent_long_before_the_next_tick(env: Env) -> None:
    wf = await env.workflow("welcome")
    async with env.worker(**NO_TICKS) as manager:
        await eventually(lambda: settled(manager), timeout=30)
        heard, (taken, _) = listener(manager).notifications_received, await schedule_actions(manager)
        committed = time.monotonic()
        [nid] = await env.insert(wf)
        await eventually(lambda: env.all_in([nid], "SENT"), timeout=10, interval=0.05)
        elapsed = time.monotonic() - committed
        assert listener(manager).notifications_received > heard
        assert (await schedule_actions(manager))[0] > taken, "the run is an action of the xnovu-poll-new schedule"
        status = await manager.status()
    assert elapsed < 5, f"commit -> SENT took {elapsed:.2f} s with hourly ticks"
    assert status["wakeup"]["state"] == "connected" and status["wakeup"]["wakeups_sent"] >= 1
    assert status["wakeup"]["last_wakeup_at"] is not None


async def test_a_scheduled_insert_wakes_the_scheduled_poll_and_is_sent_on_time(env: Env) -> None:
    wf = await env.workflow("welcome")
    async with env.worker(**NO_TICKS) as manager:
        await eventually(lambda: settled(manager), timeout=30)
        due = datetime.now(UTC) + timedelta(seconds=3)
        [nid] = await env.insert(wf, scheduled_for=due)
        await eventually(lambda: env.all_in([nid], "SENT"), timeout=15, interval=0.05)
    [event] = env.deliveries()
    received = datetime.fromisoformat(str(event["receivedAt"]).replace("Z", "+00:00"))
    assert abs((received - due).total_seconds()) <= 1.0


async def test_a_paused_schedule_is_never_started_by_a_wakeup(env: Env) -> None:
    wf = await env.workflow("welcome")
    async with env.worker(**NO_TICKS) as manager:
        await eventually(lambda: settled(manager), timeout=30)
        assert manager.client is not None
        await set_paused(manager.client, [PollKind.NEW], True, "maintenance")
        w = listener(manager)
        # Straight after the pause: the paused state is read afresh before every trigger, never cached.
        taken, _ = await schedule_actions(manager)
        heard, skipped = w.notifications_received, w.skipped_paused
        ids = [(await env.insert(wf))[0] for _ in range(5)]
        await eventually(lambda: _heard_and_skipped(w, heard + 5, skipped + 1), timeout=10)
        await eventually(lambda: _idle(w), timeout=5)
        assert await schedule_actions(manager) == (taken, 0), "no run of the paused schedule was started"
        assert await env.all_in(ids, "PENDING")
        await set_paused(manager.client, [PollKind.NEW], False)
        [late] = await env.insert(wf)
        await eventually(lambda: env.all_in([*ids, late], "SENT"), timeout=15)


async def _heard_and_skipped(w: WakeupListener, heard: int, skipped: int) -> bool:
    return w.notifications_received >= heard and w.skipped_paused >= skipped


async def _idle(w: WakeupListener) -> bool:
    return not w.pending


async def test_behind_a_transaction_pooler_wakeups_are_off_and_interval_polling_still_delivers(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    url = database_url(env.settings)
    pooled = SecretStr(url + ("&" if "?" in url else "?") + "pgbouncer=true")
    wf = await env.workflow("welcome")
    with caplog.at_level(logging.INFO, logger="xnovu"):
        async with env.worker(database_url=pooled, poll_interval_ms=1_000) as manager:
            assert manager.settings.transaction_pooler and manager.settings.statement_cache_size == 0
            status = (await manager.status())["wakeup"]
            assert status["enabled"] is False and status["state"] == "off"
            assert "transaction pooler" in status["reason"]
            [nid] = await env.insert(wf)
            await eventually(lambda: env.all_in([nid], "SENT"), timeout=15)
            assert listener(manager).notifications_received == 0
    off = [r for r in caplog.records if r.getMessage().startswith("wake-ups are off")]
    assert len(off) == 1, "said once in the log"
    assert "transaction pooler" in off[0].__dict__["reason"]
    assert all(DB_PASSWORD not in r.getMessage() for r in caplog.records)


async def test_wakeups_can_be_switched_off(env: Env) -> None:
    async with env.worker(wakeup_enabled=False) as manager:
        status = (await manager.status())["wakeup"]
    assert status == {**status, "enabled": False, "state": "off", "reason": "WAKEUP_ENABLED is false"}


async def test_a_killed_listen_connection_reconnects_and_wakes_again(env: Env) -> None:
    wf = await env.workflow("welcome")
    async with env.worker(**NO_TICKS) as manager:
        await eventually(lambda: settled(manager), timeout=30)
        w = listener(manager)
        first_pid = w.backend_pid
        assert first_pid is not None
        assert await env.repo.pool.fetchval("SELECT pg_terminate_backend($1)", first_pid)
        await eventually(lambda: _reconnected(w, first_pid), timeout=20)
        await eventually(lambda: settled(manager), timeout=30)
        heard = w.notifications_received
        [nid] = await env.insert(wf)
        await eventually(lambda: env.all_in([nid], "SENT"), timeout=10, interval=0.05)
        assert w.notifications_received > heard, "the new LISTEN connection heard the commit"
    assert w.reconnects >= 1


async def _reconnected(w: WakeupListener, old_pid: int) -> bool:
    return w.state == "connected" and w.backend_pid not in (None, old_pid)


async def test_many_separate_commits_start_only_a_handful_of_poll_runs(env: Env) -> None:
    wf = await env.workflow("welcome")
    async with env.worker(**NO_TICKS) as manager:
        await eventually(lambda: settled(manager), timeout=30)
        taken, _ = await schedule_actions(manager)
        ids: list[int] = []
        for _ in range(200):
            ids += await env.insert(wf)
        await eventually(lambda: env.all_in(ids, "SENT"), timeout=60)
        await eventually(lambda: settled(manager), timeout=30)
        runs = (await schedule_actions(manager))[0] - taken
        heard = listener(manager).notifications_received
    assert heard >= 200
    assert 1 <= runs <= 15, f"200 commits started {runs} poll runs"
    assert env.stats()["deliveries"] == 200 and env.stats()["duplicate_deliveries"] == 0


async def test_a_wakeup_storm_from_two_workers_never_delivers_twice(env: Env) -> None:
    wf = await env.workflow("welcome")
    async with env.worker(**NO_TICKS) as a, env.worker(**NO_TICKS) as b:
        await eventually(lambda: settled(a), timeout=30)
        await eventually(lambda: settled(b), timeout=30)
        ids = await asyncio.gather(*(env.insert(wf) for _ in range(20)))
        flat = [i for chunk in ids for i in chunk]
        await eventually(lambda: env.all_in(flat, "SENT"), timeout=30)
    assert env.stats()["deliveries"] == 20 and env.stats()["duplicate_deliveries"] == 0


# -- cost of the triggers (issue 16, finding 3) -------------------------------------------------------------------

#: Queued rows a bulk edit touches. Big enough that a per-row-pair cost (a nested loop over the two transition
#: tables) shows as a ratio of 10 and more, small enough to stay a few seconds with linear triggers.
BULK_ROWS = int(os.environ.get("XNOVU_TEST_BULK_ROWS", "20000"))
#: A bulk UPDATE of queued rows costs at most this many times the same statement without xnovu's triggers
#: (the issue's requirement, for an edit that makes no row sendable: the triggers' WHEN clauses reject every row).
MAX_TRIGGER_COST_RATIO = 2.0
#: The same for an edit that makes every row sendable again: each row then calls the trigger function once
#: (1.6x measured at 20 000 and 100 000 rows, docs/performance.md); the bound leaves room for a loaded CI machine.
MAX_FIRING_COST_RATIO = 3.0


async def _queue_rows(env: Env, n: int, name: str = "bulk") -> None:
    wf = await env.workflow("welcome")
    await env.execute(
        "INSERT INTO notify.ent_notification (name, publish_status, notification_workflow_id, payload, recipients)"
        " SELECT $2 || i, 'PUBLISH', $1, jsonb_build_object('campaign', 'spring', 'i', i), ARRAY[gen_random_uuid()]"
        " FROM generate_series(1, $3) i",
        wf,
        name,
        n,
    )


async def _timed_update(conn: asyncpg.Connection, statement: str, *, triggers: bool) -> float:
    """Seconds one UPDATE takes, committed, with xnovu's triggers or with every user trigger of the table disabled
    for that transaction only (ALTER TABLE ... DISABLE TRIGGER USER is undone before the commit). VACUUM afterwards,
    so each run starts from the same heap."""
    async with conn.transaction():
        if not triggers:
            await conn.execute("ALTER TABLE notify.ent_notification DISABLE TRIGGER USER")
        started = time.perf_counter()
        await conn.execute(statement)
        elapsed = time.perf_counter() - started
        if not triggers:
            await conn.execute("ALTER TABLE notify.ent_notification ENABLE TRIGGER USER")
    await conn.execute("VACUUM notify.ent_notification")
    return elapsed


async def _trigger_cost(env: Env, statement: str, rounds: int = 5) -> tuple[float, float]:
    """(best seconds with the triggers, best seconds without), measured side by side, alternating."""
    conn = await asyncpg.connect(database_url(env.settings))
    try:
        with_: list[float] = []
        without: list[float] = []
        for i in range(rounds):
            with_.append(await _timed_update(conn, statement.format(i=i), triggers=True))
            without.append(await _timed_update(conn, statement.format(i=i + 100), triggers=False))
            if with_[-1] / without[-1] > 10 * MAX_TRIGGER_COST_RATIO:
                break  # quadratic, not noise: repeating only takes longer
        return min(with_), min(without)
    finally:
        await conn.close()


#: The bulk edits timed, with their bound: one that makes nothing sendable (the issue's campaign edit; xnovu's own
#: claims and finalizes look the same to the triggers) and one that makes every row sendable again (each row fires).
BULK_EDITS = {
    "payload edit": (
        "UPDATE notify.ent_notification SET payload = payload || jsonb_build_object('edit', {i})"
        " WHERE notification_status = 'PENDING'",
        MAX_TRIGGER_COST_RATIO,
    ),
    "reschedule to now": (
        "UPDATE notify.ent_notification SET scheduled_for = now() - interval '{i} seconds'"
        " WHERE notification_status = 'PENDING'",
        MAX_FIRING_COST_RATIO,
    ),
}


@pytest.mark.parametrize("edit", list(BULK_EDITS))
async def test_a_bulk_update_of_queued_rows_costs_at_most_twice_the_statement_without_triggers(
    env: Env, edit: str
) -> None:
    await _queue_rows(env, BULK_ROWS)
    await env.execute("VACUUM ANALYZE notify.ent_notification")
    statement, bound = BULK_EDITS[edit]
    with_, without = await _trigger_cost(env, statement)
    ratio = with_ / without
    print(
        f"\n{edit} of {BULK_ROWS} PENDING rows: {with_:.3f} s with triggers, {without:.3f} s without, ratio {ratio:.2f}"
    )
    assert ratio <= bound, (
        f"{edit} of {BULK_ROWS} queued rows: {with_:.2f} s with xnovu's triggers vs {without:.2f} s without"
    )


async def test_one_notification_per_kind_and_transaction_and_none_from_a_rolled_back_savepoint(env: Env) -> None:
    """The update triggers notify from the first row that fires in a transaction and mark it done for the rest; a
    savepoint rolled back takes its notification and its mark with it."""
    await _queue_rows(env, 20, "sp")
    park = "UPDATE notify.ent_notification SET notification_status = 'FAILED' WHERE name LIKE 'sp%'"
    requeue = "UPDATE notify.ent_notification SET notification_status = 'PENDING' WHERE name = $1"
    async with listening(env) as (_, received):
        conn = await asyncpg.connect(database_url(env.settings))
        try:
            await conn.execute(park)

            async def transaction(*steps: tuple[str, bool]) -> list[str]:
                """Run (name to requeue, in a savepoint rolled back?) steps in one transaction; what it notified."""
                before = len(received)
                async with conn.transaction():
                    for name, rolled_back in steps:
                        if rolled_back:
                            tr = conn.transaction()
                            await tr.start()
                            await conn.execute(requeue, name)
                            await tr.rollback()
                        else:
                            await conn.execute(requeue, name)
                await conn.execute("SELECT pg_notify($1, 'marker')", CHANNEL)
                await eventually(lambda: _has_marker(received, before), timeout=10, interval=0.02)
                return received[before:-1]

            assert await transaction(("sp1", False), ("sp2", False), ("sp3", False)) == ["new"]
            assert await transaction(("sp4", True)) == [], "the savepoint's notification was rolled back"
            assert await transaction(("sp5", True), ("sp6", False)) == ["new"], "and its mark with it"
            assert await transaction(("sp7", False), ("sp8", True)) == ["new"]
            # The mark is transaction-local: the session's next transaction notifies again.
            assert await transaction(("sp9", False)) == ["new"]
        finally:
            await conn.close()


# -- the database's switch (migration 0007) -----------------------------------------------------------------------


async def test_switched_off_in_the_database_no_notification_is_delivered_and_switched_on_it_is(env: Env) -> None:
    wf = await env.workflow("welcome")
    insert = (
        "INSERT INTO notify.ent_notification (name, publish_status, notification_workflow_id, payload, recipients)"
        " VALUES ($2, 'PUBLISH', $1, '{}'::jsonb, ARRAY[gen_random_uuid()])"
    )
    assert (await env.repo.wakeup_switch() or {}).get("notify") is True, "on in a fresh database"
    async with listening(env) as (_, received):
        state = await env.repo.set_wakeup_switch(False)
        assert state["notify"] is False and state["changed_by"] == "postgres"
        assert await notifications_of(env, received, insert, wf, "off1") == []
        await _queue_rows(env, 10, "offbulk")
        got = await notifications_of(
            env,
            received,
            "UPDATE notify.ent_notification SET notification_status = 'FAILED', dead_lettered_at = now()"
            " WHERE name LIKE 'off%'",
        )
        assert got == []
        ids = [r["id"] for r in await env.repo.pool.fetch("SELECT id FROM notify.ent_notification")]
        before = len(received)
        assert len(await env.repo.dlq_requeue(ids)) == 11
        assert await notifications_of(env, received, "SELECT 1") == []
        assert received[before:] == ["marker"], "a requeue notifies nothing while switched off"
        # Scheduled rows too, and a held connection of a pool sees the change at its next statement.
        future = "UPDATE notify.ent_notification SET scheduled_for = now() + interval '1 hour' WHERE name = 'off1'"
        assert await notifications_of(env, received, future) == []

        assert (await env.repo.set_wakeup_switch(True))["notify"] is True
        assert await notifications_of(env, received, insert, wf, "on1") == ["new"]
        assert await notifications_of(env, received, future.replace("1 hour", "2 hours")) == ["scheduled"]


async def test_status_says_when_the_worker_listens_but_the_database_does_not_notify(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    await env.repo.set_wakeup_switch(False)
    with caplog.at_level(logging.INFO, logger="xnovu"):
        async with env.worker() as manager:
            await eventually(lambda: _connected(listener(manager)), timeout=30)
            status = (await manager.status())["wakeup"]
    assert status["enabled"] is True and status["state"] == "connected"
    assert status["database_notify"] is False
    assert "switched off in the database" in status["reason"] and "poll interval" in status["reason"]
    assert any("switched off in the database" in r.getMessage() for r in caplog.records), "said in the log"


async def _connected(w: WakeupListener) -> bool:
    return w.state == "connected" and w.database_notify is not None


#: Seconds each insert-rate round lasts, and rounds per mode (the modes alternate within a round).
INSERT_ROUND_S = 2.0
INSERT_ROUNDS = 3


async def _insert_rate(urls: list[str], wf: int, seconds: float, synchronous_commit: str) -> float:
    """Single-row inserts per second, one insert per transaction, one loop per connection, side by side."""
    settings = {"synchronous_commit": synchronous_commit}
    conns = [await asyncpg.connect(url, server_settings=settings) for url in urls]
    statement = (
        "INSERT INTO notify.ent_notification (name, publish_status, notification_workflow_id, payload, recipients)"
        " VALUES ('rate', 'PUBLISH', $1, '{}'::jsonb, ARRAY[gen_random_uuid()])"
    )

    async def loop(conn: asyncpg.Connection, deadline: float) -> int:
        n = 0
        while time.perf_counter() < deadline:
            await conn.execute(statement, wf)
            n += 1
        return n

    try:
        started = time.perf_counter()
        counts = await asyncio.gather(*(loop(c, started + seconds) for c in conns))
        return sum(counts) / (time.perf_counter() - started)
    finally:
        for conn in conns:
            await conn.close()


@pytest.mark.slow
async def test_print_single_row_inserts_per_second_with_the_notify_on_and_off(env: Env) -> None:
    """Benchmark, no timed assertion (run with `-m slow -s`): what the per-insert pg_notify costs where nobody
    listens. Rounds alternate: switch on, switch off, no xnovu trigger at all."""
    wf = await env.workflow("welcome")
    url = database_url(env.settings)

    async def mode(name: str) -> None:
        if name == "no triggers":
            await env.execute("ALTER TABLE notify.ent_notification DISABLE TRIGGER USER")
        else:
            await env.execute("ALTER TABLE notify.ent_notification ENABLE TRIGGER USER")
            await env.repo.set_wakeup_switch(name == "notify on")

    rates: dict[tuple[str, int, str], list[float]] = {}
    for _ in range(INSERT_ROUNDS):
        for sync in ("on", "off"):
            for connections in (1, 4):
                for name in ("notify on", "notify off", "no triggers"):
                    await mode(name)
                    rate = await _insert_rate([url] * connections, wf, INSERT_ROUND_S, sync)
                    rates.setdefault((sync, connections, name), []).append(rate)
                    await env.execute("TRUNCATE notify.ent_notification CASCADE")
    await mode("notify on")
    print(f"\nsingle-row inserts/s, one per transaction, {INSERT_ROUNDS} rounds of {INSERT_ROUND_S:.0f} s, median:")
    for (sync, connections, name), values in sorted(rates.items()):
        each = ", ".join(f"{v:.0f}" for v in values)
        print(
            f"  synchronous_commit={sync:3} {connections} connection(s), {name:12}: {statistics.median(values):6.0f}"
            f"  (rounds: {each})"
        )
    assert all(v > 0 for values in rates.values() for v in values)
