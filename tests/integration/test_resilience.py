"""Resilience on the shared test stack (I2, I3 of docs/design.md "The invariants"; README "Operations"): a Postgres
outage under a running worker, a worker SIGKILLed mid-batch, a Novu 429 storm, and a timeout retried into a 429 (once a
duplicate-delivery bug). The long fault suite with 1000 rows is `ops/faults/run.py`.

The session's Postgres is shared by every test: the outage test always restarts it in a `finally`.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import httpx

from tests.support import Env, eventually
from xnovu.config import Settings
from xnovu.devtools.stack import child_environ, free_port
from xnovu.novu.client import NovuClient, RecipientEvent, transaction_id_for

T = TypeVar("T")

SETTINGS_VARS = {name.upper() for name in Settings.model_fields}


def _database_error(exc: BaseException) -> bool:
    """A connection problem while Postgres restarts (asyncpg's errors, or the socket's)."""
    return isinstance(exc, OSError | ConnectionError) or type(exc).__module__.startswith("asyncpg")


async def tolerant(check: Callable[[], Awaitable[T]]) -> T | None:
    """`check()`, with a database error (the server restarting, a stale pooled connection) read as "not yet"."""
    try:
        return await check()
    except Exception as exc:
        if _database_error(exc):
            return None
        raise


async def retrying(action: Callable[[], Awaitable[T]], timeout: float = 15.0) -> T:
    """Run a database action until it succeeds (the pool may still hold connections of the stopped server)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await action()
        except Exception as exc:
            if not _database_error(exc) or time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


async def live_stats(env: Env) -> dict[str, Any]:
    """The emulator's counters through its HTTP API (safe while its thread is serving requests)."""
    async with env.emu as http:
        response = await http.get("/emulator/stats")
        response.raise_for_status()
        return dict(response.json())


def no_duplicates(env: Env) -> tuple[int, int]:
    """(emulator duplicate_deliveries, extra (subscriberId, transactionId) pairs in the delivered events)."""
    pairs = Counter((e["subscriberId"], e["transactionId"]) for e in env.deliveries())
    return env.stats()["duplicate_deliveries"], sum(c - 1 for c in pairs.values())


# -- Postgres outage -------------------------------------------------------------------------------------------


async def test_postgres_outage_turns_health_503_and_the_worker_recovers_by_itself(env: Env) -> None:
    wf = await env.workflow("welcome")
    pg = env.stack.postgres
    async with env.worker() as m, httpx.AsyncClient(timeout=10) as http:
        assert m.health_port
        url = f"http://127.0.0.1:{m.health_port}/health"
        assert (await http.get(url)).status_code == 200
        [before] = await env.insert(wf, recipients=2)
        try:
            await asyncio.to_thread(pg.stop)

            async def unhealthy() -> dict[str, Any] | None:
                r = await http.get(url)
                return r.json() if r.status_code == 503 else None

            body = await eventually(unhealthy, timeout=10)
            assert body["status"] == "unhealthy" and "Postgres" in body["reason"], body
            await asyncio.sleep(1.5)  # polls and in-flight attempts hit the outage
            assert (await http.get(url)).status_code == 503
            assert m.running, "the worker must survive a database outage"
        finally:
            await asyncio.to_thread(pg.restart)

        async def healthy() -> bool:
            return (await http.get(url)).status_code == 200

        await eventually(healthy, timeout=20)
        assert m.running
        [after] = await retrying(lambda: env.insert(wf))
        await eventually(lambda: tolerant(lambda: env.all_in([before, after], "SENT")), timeout=30)
        assert m.running and (await http.get(url)).status_code == 200
    assert env.stats()["deliveries"] == 3
    assert no_duplicates(env) == (0, 0)


# -- worker SIGKILL --------------------------------------------------------------------------------------------


def worker_environ(settings: Settings, **overrides: Any) -> dict[str, str]:
    """`settings` as the environment variables of a worker subprocess (nothing inherited from xnovu's own)."""
    return child_environ(settings, **overrides)


async def test_worker_sigkilled_mid_batch_then_a_second_worker_finishes_every_row_once(env: Env, tmp_path) -> None:
    wf = await env.workflow("welcome")
    ids = await env.insert(wf, 100)
    # A slow-ish Novu and few slots keep the batch in flight long enough to kill the worker in the middle of it.
    env.configure_emulator(latency_ms=100)
    port = free_port()
    log_path = tmp_path / "worker-1.log"
    environ = worker_environ(
        env.settings,
        processing_lease_ms=3000,
        temporal_max_concurrent_activities=5,
        worker_health_port=port,
        worker_pid_file=tmp_path / "worker-1.pid",
    )
    with log_path.open("wb") as log_file:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "xnovu",
            "worker",
            "start",
            cwd=tmp_path,
            env=environ,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log_file,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )
    try:

        async def some_delivered() -> bool:
            assert proc.returncode is None, log_path.read_text(errors="replace")[-2000:]
            return (await live_stats(env))["deliveries"] >= 15

        await eventually(some_delivered, timeout=45, interval=0.05)
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
        at_kill = (await live_stats(env))["deliveries"]
        assert at_kill < 100, "the worker finished the batch before it could be killed; the test proves nothing"
        left = await env.statuses(ids)
        assert any(s != "SENT" for s in left.values())
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()

    env.configure_emulator(latency_ms=0)
    async with env.worker(processing_lease_ms=3000):
        await eventually(lambda: env.all_in(ids, "SENT"), timeout=45)
    stats = env.stats()
    assert stats["deliveries"] == 100
    assert no_duplicates(env) == (0, 0)
    rows = await env.repo.pool.fetch(
        "SELECT notification_status::text AS s, next_attempt_at, dead_lettered_at FROM notify.ent_notification "
        "WHERE id = ANY($1::bigint[])",
        ids,
    )
    assert Counter(r["s"] for r in rows) == {"SENT": 100}, "no row stuck in PENDING or PROCESSING"
    assert all(r["dead_lettered_at"] is None for r in rows)


# -- Novu 429 storm --------------------------------------------------------------------------------------------


async def test_novu_429_storm_is_ridden_out_honouring_retry_after(env: Env) -> None:
    wf = await env.workflow("welcome")
    # 5 tokens/s: the emulator's bucket holds 27 and answers 429 with Retry-After: 1 once it is empty.
    env.configure_emulator(rate_limit_rps=5)
    samples: list[tuple[float, int]] = []

    async def sample(stop: asyncio.Event) -> None:
        while not stop.is_set():
            codes = (await live_stats(env))["status_codes"]
            samples.append((time.monotonic(), int(codes.get("429", 0))))
            await asyncio.sleep(0.05)

    stop = asyncio.Event()
    sampler = asyncio.create_task(sample(stop))
    try:
        async with env.worker():
            ids = await env.insert(wf, 30, recipients=2)  # 60 events: 27 pass at once, the rest hit the limit
            storm_started = time.monotonic()
            await asyncio.sleep(5)
            env.configure_emulator(rate_limit_rps=None)
            storm = time.monotonic() - storm_started
            # Generous: the throttled rows wait out their retry backoff, which a loaded machine stretches.
            await eventually(lambda: env.all_in(ids, "SENT"), timeout=90)
    finally:
        stop.set()
        await sampler
    stats = env.stats()
    throttled = int(stats["status_codes"].get("429", 0))
    assert stats["deliveries"] == 60
    assert no_duplicates(env) == (0, 0)
    assert throttled > 0, "the storm never throttled anything; the test proves nothing"
    # Honouring Retry-After (1 s) means each of the ≤ 33 throttled events meets at most about one 429 per second,
    # however many senders the worker runs; a client ignoring it would retry within milliseconds, hundreds of times.
    waiting = 60 - 27
    assert throttled <= waiting * (storm + 2), f"{throttled} 429s in {storm:.1f} s: Retry-After was not honoured"
    worst = max(
        (b - a for (t0, a) in samples for (t1, b) in samples if 0 <= t1 - t0 <= 1.0),
        default=0,
    )
    assert worst <= waiting + 5, f"{worst} 429s within one second: a retry did not wait for Retry-After"


# -- a timeout followed by a 429 (was a duplicate-delivery bug) ------------------------------------------------


async def test_a_retry_after_a_timeout_that_meets_a_429_does_not_deliver_twice(env: Env) -> None:
    """Three attempts at one recipient, each carrying the key generation the previous one left in the ledger."""
    assert env.settings.novu_secret_key is not None
    novu = NovuClient(
        env.emulator.url, env.settings.novu_secret_key.get_secret_value(), timeout_s=0.5, quick_retries=0, settle_s=0.1
    )
    tx = transaction_id_for(1, "subscriber-1")
    try:
        # 1: Novu runs the trigger but answers after the client gave up, and its activity feed cannot be asked
        # (were it up, it would settle the outcome): unknown, the key is kept.
        env.configure_emulator(timeout_rate=1.0, timeout_delay_s=2.0, feed_error_rate=1.0)
        [first] = await novu.trigger(
            workflow_key="welcome", payload={}, overrides=None, events=[RecipientEvent("subscriber-1", tx, 0)]
        )
        assert first.outcome == "unknown" and first.next_key_generation == 0
        # 2: the retry meets the rate limit, which Novu checks before the idempotency key (the key is not consulted).
        env.configure_emulator(timeout_rate=0.0, feed_error_rate=0.0, rate_limit_rps=0.2)  # a bucket of one token...
        assert (await novu.check_auth())[0]  # ...spent by a cancel, which delivers nothing
        [second] = await novu.trigger(
            workflow_key="welcome",
            payload={},
            overrides=None,
            events=[RecipientEvent("subscriber-1", tx, first.next_key_generation)],
        )
        assert second.http_status == 429
        # 3: the limit is gone; the same key would replay the first run, a rotated one runs the workflow again.
        env.configure_emulator(rate_limit_rps=None)
        [third] = await novu.trigger(
            workflow_key="welcome",
            payload={},
            overrides=None,
            events=[RecipientEvent("subscriber-1", tx, second.next_key_generation)],
        )
        assert third.outcome == "acknowledged"
    finally:
        await novu.aclose()
    assert env.stats()["deliveries"] == 1, env.deliveries()
    assert env.stats()["duplicate_deliveries"] == 0
