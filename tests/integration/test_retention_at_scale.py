"""Claims while a prune removes 10 000 000 ledger rows (docs/retention.md "Measured"): a `slow` test printing figures.

Run it alone, never beside another heavy run (it fills about 2 GB and keeps both cores busy for several minutes):

    flock /tmp/xnovu-heavy.lock .venv/bin/pytest -p no:cacheprovider -m slow -s \
        tests/integration/test_retention_at_scale.py

`XNOVU_PRUNE_ROWS` sets the ledger rows (default 10 000 000, as 100 000 SENT notifications of 100 recipients each),
`XNOVU_PRUNE_PAUSE_RATIO` the prune's pause after each batch relative to the batch (default 1.0, the product's).
The claim loop, the insert loop and the fill are those of tests/integration/test_retention.py (CI runs the same
measurement on 100 000 rows) and tests/integration/test_db_adoption.py.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from typing import Any

import pytest

from tests.integration.test_db_adoption import insert_waits_during
from tests.integration.test_retention import DUE, claims_during, fill_ended, p95
from tests.support import Env
from xnovu.db.retention import Pruner, RetentionPolicy

ROWS = int(os.environ.get("XNOVU_PRUNE_ROWS", "10000000"))
#: The prune's pause after each batch, relative to the batch (RetentionPolicy.pause_ratio; 1.0 is the default).
PAUSE_RATIO = float(os.environ.get("XNOVU_PRUNE_PAUSE_RATIO", "1.0"))
RECIPIENTS = 100
#: How long the claim loop runs alone first, for the figures to compare with.
BASELINE_S = 20.0
#: Between claims: ten polls a second, so the due rows last the whole prune.
CLAIM_PAUSE_S = 0.1


def _figures(label: str, claims: list[float]) -> str:
    return (
        f"{label}: {len(claims)} claims, p50 {statistics.median(claims) * 1000:.1f} ms, "
        f"p95 {p95(claims) * 1000:.1f} ms, max {max(claims) * 1000:.1f} ms"
    )


@pytest.mark.slow
@pytest.mark.timeout(7200)
async def test_claims_go_on_while_ten_million_ledger_rows_are_pruned(env: Env) -> None:
    wf = await env.workflow("welcome")
    started = time.monotonic()
    await fill_ended(env, wf, ROWS // RECIPIENTS, RECIPIENTS, step=200_000)
    await env.repo.pool.execute(DUE, wf, 200_000, timeout=3600)
    await env.repo.pool.execute("VACUUM ANALYZE notify.ent_notification", timeout=3600)
    await env.repo.pool.execute("VACUUM ANALYZE notify.ent_notification_delivery", timeout=3600)
    size = await env.repo.pool.fetchval(
        "SELECT pg_size_pretty(pg_total_relation_size('notify.ent_notification_delivery'))"
    )
    print(f"\nfilled {ROWS} ledger rows ({size}) in {time.monotonic() - started:.0f} s")

    baseline, _ = await claims_during(env.repo, asyncio.sleep(BASELINE_S), pause_s=CLAIM_PAUSE_S)
    url = env.settings.database_url
    assert url is not None
    box: list[Any] = []

    async def prune() -> None:
        box.append(await Pruner(env.repo.pool, RetentionPolicy(days=30, pause_ratio=PAUSE_RATIO)).run("measure"))

    started = time.monotonic()
    claims, (worst_insert, inserts) = await claims_during(
        env.repo, insert_waits_during(url.get_secret_value(), prune()), pause_s=CLAIM_PAUSE_S
    )
    took = time.monotonic() - started
    [run] = box
    print(_figures("claims alone", baseline))
    print(_figures("claims while pruning", claims))
    print(
        f"prune (pause ratio {PAUSE_RATIO:g}): {run.deliveries} ledger rows in {took:.0f} s "
        f"({run.deliveries / took:.0f} rows/s), {run.batches} batches, longest {run.longest_batch_ms} ms; "
        f"{inserts} single-row inserts meanwhile, slowest {worst_insert * 1000:.0f} ms"
    )
    assert run.deliveries == ROWS
    assert max(claims) < 0.5 and worst_insert < 0.5, "I7: neither a claim nor an insert waits long"
    assert run.longest_batch_ms < 500
