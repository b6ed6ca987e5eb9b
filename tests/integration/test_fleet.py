"""The rows window follows the live fleet (migration 0017, xnovu/db/fleet.py, docs/priority.md "Temporal's task
queue"): a claim counts the workflow task slots of the workers seen lately on its task queue, never fewer than its
own; a stopping worker leaves at once, a dead one ages out on the database's clock and is forgotten later.

Claim-level tests call `Repository.claim` on a real Postgres with real heartbeats (no Temporal); the worker-level
ones run `WorkerManager`s. Three workers sending on the real stack: tests/integration/test_attack17b.py
`test_three_workers_keep_more_rows_in_flight_than_one`.
"""

from __future__ import annotations

import time

import pytest

from tests.support import Env, eventually
from xnovu.core.models import PollKind
from xnovu.db import fleet
from xnovu.db.fleet import FleetMember, FleetScope, fleet_status
from xnovu.db.repository import ClaimLimits
from xnovu.worker.fleet import FleetPresence

#: 5 batches of 100 at most, else 2 rows per slot of the fleet, and the claiming worker has 2 slots.
LIMITS = ClaimLimits(max_rows=500, max_tokens=10_000, rows_per_slot=2, own_slots=2)


@pytest.fixture(autouse=True)
def fast_heartbeats(monkeypatch: pytest.MonkeyPatch) -> None:
    """A heartbeat every 0.2 s (seen within 0.6 s), forgotten after 1.5 s: production's 5 s / 15 s / 10 min."""
    monkeypatch.setattr(fleet, "HEARTBEAT_EVERY_S", 0.2)
    monkeypatch.setattr(fleet, "FORGET_AFTER_S", 1.5)


def _member(env: Env, name: str, slots: int, *, queue: str | None = None) -> FleetMember:
    scope = FleetScope(env.settings.temporal_namespace, queue or env.settings.temporal_task_queue)
    return FleetMember(name, scope, slots, enterprise_id=None, wakeups=True, version="test")


def _scope(env: Env) -> FleetScope:
    return FleetScope(env.settings.temporal_namespace, env.settings.temporal_task_queue)


async def _window(env: Env) -> int:
    """The rows window of a claim now: everything in flight is finished first, then one claim takes all it may."""
    await env.execute(
        "UPDATE notify.ent_notification SET notification_status = 'SENT' WHERE notification_status = 'PROCESSING'"
    )
    batch = await env.repo.claim(PollKind.NEW, batch_size=100, lease_ms=600_000, limits=LIMITS, fleet=_scope(env))
    return len(batch.rows)


async def _pending(env: Env, n: int) -> None:
    wf = await env.workflow("welcome")
    await env.insert(wf, n)


async def test_a_dead_worker_counts_until_it_ages_out_then_is_forgotten_and_a_stopped_one_leaves_at_once(
    env: Env,
) -> None:
    await _pending(env, 1_000)
    alive = {"a": True, "b": True}
    a = FleetPresence(env.repo.pool, _member(env, "a", 3), lambda: alive["a"])
    b = FleetPresence(env.repo.pool, _member(env, "b", 4), lambda: alive["b"])
    other = FleetPresence(env.repo.pool, _member(env, "other", 50, queue="another-queue"), lambda: True)
    await a.start()
    await b.start()
    await other.start()
    try:
        assert await _window(env) == 2 * (3 + 4), "both workers' slots count; another queue's do not"
        alive["b"] = False  # b stops heartbeating: killed, or its Temporal worker ended
        died = time.monotonic()
        await eventually(lambda: _window_is(env, 2 * 3), timeout=5, interval=0.05)
        aged = time.monotonic() - died
        assert aged >= fleet.seen_within_s() - fleet.HEARTBEAT_EVERY_S, f"aged out after {aged:.2f} s"
        assert await fleet_status(env.repo.pool, _scope(env)) == {"workers": 1, "workflow_slots": 3, "unseen": 1}
        # a's heartbeats delete b's row once it has not been seen for FORGET_AFTER_S.
        await eventually(lambda: _rows_of(env, "b", 0), timeout=5, interval=0.1)
        forgotten = time.monotonic() - died
        await a.stop()
        assert await _rows_of(env, "a", 0), "a stopping worker's row is gone at once"
        assert await _window(env) == 2 * 2, "no worker seen: the claiming worker's own slots"
    finally:
        for p in (a, b, other):
            await p.stop()
    print(
        f"\nb's slots stopped counting {aged:.2f} s after its last heartbeat (0.2 s beats), forgotten after "
        f"{forgotten:.2f} s"
    )


async def _window_is(env: Env, rows: int) -> bool:
    return await _window(env) == rows


async def _rows_of(env: Env, member: str, n: int) -> bool:
    return await env.repo.pool.fetchval("SELECT count(*) FROM notify.xnovu_worker WHERE id = $1", member) == n


async def test_times_are_the_databases_a_worker_whose_clock_is_an_hour_off_counts_and_ages_normally(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    await _pending(env, 1_000)
    skewed = time.time() + 3600
    monkeypatch.setattr(time, "time", lambda: skewed)  # the worker's wall clock; its heartbeat never sends it
    alive = [True]
    late = FleetPresence(env.repo.pool, _member(env, "late", 5), lambda: alive[0])
    await late.start()
    try:
        seen_ago = await env.repo.pool.fetchval("SELECT extract(epoch FROM now() - seen_at) FROM notify.xnovu_worker")
        assert 0 <= seen_ago < 1
        assert await _window(env) == 2 * 5
        alive[0] = False
        await eventually(lambda: _window_is(env, 2 * 2), timeout=5, interval=0.05)
    finally:
        await late.stop()


async def test_thousands_of_rows_of_gone_workers_are_pruned_in_bounded_steps_and_never_counted(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A crash-looping deployment leaves a row per restart: each heartbeat deletes at most PRUNE_BATCH of those not
    seen for FORGET_AFTER_S, and the claim's read counts none of them meanwhile."""
    monkeypatch.setattr(fleet, "PRUNE_BATCH", 1_000)
    await env.execute(
        "INSERT INTO notify.xnovu_worker (id, namespace, task_queue, workflow_slots, wakeups, version, seen_at)"
        " SELECT 'gone-' || g, $1, $2, 50, true, 'old', now() - interval '1 hour' FROM generate_series(1, 5000) g",
        env.settings.temporal_namespace,
        env.settings.temporal_task_queue,
    )
    await _pending(env, 30)
    started = time.perf_counter()
    assert await _window(env) == 2 * 2, "rows of gone workers never count"
    claim_s = time.perf_counter() - started
    one = _member(env, "live", 4)
    pruned = [await fleet.beat(env.repo.pool, one) for _ in range(6)]
    assert pruned == [1_000] * 5 + [0]
    assert await env.repo.pool.fetchval("SELECT count(*) FROM notify.xnovu_worker") == 1
    assert await _window(env) == 2 * 4
    print(f"\nclaim with 5 000 rows of gone workers: {claim_s * 1000:.0f} ms; pruned per heartbeat: {pruned}")


async def test_a_worker_registers_whatever_its_scope_or_wake_ups_and_leaves_when_it_stops(env: Env) -> None:
    """A worker scoped to one enterprise (POLL_ENTERPRISE_ID) and one with wake-ups off serve the same task queue:
    both count. /status shows the fleet and the rows window it makes."""
    scoped = {"poll_enterprise_id": "aaaaaaaa-0000-4000-8000-00000000000a", "temporal_max_concurrent_workflows": 3}
    async with env.worker(**scoped) as first:
        async with env.worker(wakeup_enabled=False, temporal_max_concurrent_workflows=4):
            rows = await env.repo.pool.fetch(
                "SELECT workflow_slots, enterprise_id, wakeups FROM notify.xnovu_worker ORDER BY workflow_slots"
            )
            assert [tuple(r) for r in rows] == [(3, scoped["poll_enterprise_id"], True), (4, None, False)]
            status = (await first.status())["fleet"]
            assert status == {"workers": 2, "workflow_slots": 7, "unseen": 0, "rows_window": 14}
        assert (await first.status())["fleet"]["workflow_slots"] == 3, "the stopped worker left at once"
    assert await env.repo.pool.fetchval("SELECT count(*) FROM notify.xnovu_worker") == 0
