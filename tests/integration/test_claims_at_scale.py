"""Claims stay cheap on a large outbox: each claim query visits about as many rows as it returns.

The table holds mostly SENT rows, 10 000 rows scheduled weeks ahead and 10 000 DRAFT rows whose time has passed
(none of which a claim may take), plus a few due rows of each kind. `EXPLAIN (ANALYZE, BUFFERS)` of every claim
query must show index scans that discard (almost) nothing, and the p95 of the real queries must stay ≤ 20 ms.

CI runs it on XNOVU_SCALE_ROWS rows (default 200 000); `XNOVU_SCALE_ROWS=1000000` gives the issue's size.
"""

from __future__ import annotations

import os
import time
from typing import Any

import pytest

from tests.support import Env
from xnovu.db.queries import q
from xnovu.devtools.bench.phases import percentile

ROWS = int(os.environ.get("XNOVU_SCALE_ROWS", "200000"))
DUE = 50
FILL = """
INSERT INTO notify.ent_notification
  (name, publish_status, notification_workflow_id, notification_status, payload, recipients, scheduled_for,
   next_attempt_at, attempts)
SELECT 'n' || g,
       (CASE WHEN g <= $3 THEN 'DRAFT' ELSE 'PUBLISH' END)::shared_types.publish_status,
       $1,
       (CASE WHEN g <= $3 + $4 + $5 THEN 'PENDING'
             WHEN g <= $3 + $4 + $5 + $6 THEN 'FAILED' ELSE 'SENT' END)::shared_types.notification_status,
       '{}'::jsonb, ARRAY[gen_random_uuid()],
       CASE WHEN g <= $3 THEN now() - interval '1 day'
            WHEN g <= $3 + $4 THEN now() + interval '30 days'
            WHEN g <= $3 + $4 + $5 AND g % 2 = 0 THEN now() - interval '1 minute'
            ELSE NULL END,
       CASE WHEN g > $3 + $4 + $5 AND g <= $3 + $4 + $5 + $6 THEN now() - interval '1 minute' ELSE NULL END,
       CASE WHEN g > $3 + $4 + $5 AND g <= $3 + $4 + $5 + $6 THEN 1 ELSE 0 END
FROM generate_series(1, $2) AS g
"""

QUERIES: dict[str, list[Any]] = {
    # name: parameters (batch size, enterprise, third, fourth) as the claim passes them
    "candidates_new": [100, None],
    "candidates_scheduled": [100, None, 60_000],
    "candidates_failed": [100, None, 900_000, []],
    "in_flight": [900_000, None],
    "claim_flight": [900_000, None, 300, "default", "xnovu-notification-processing", 15_000],
    "heads_new": [100, None, None, 16, 4],
    "heads_scheduled": [100, None, None, 16, 4, 60_000],
    "heads_failed": [100, None, None, 16, 4],
}


def _walk(plan: dict[str, Any]) -> list[dict[str, Any]]:
    nodes = [plan]
    for child in plan.get("Plans", []):
        nodes.extend(_walk(child))
    return nodes


@pytest.fixture
async def big(env: Env) -> Env:
    wf = await env.workflow("welcome")
    await env.repo.pool.execute(FILL, wf, ROWS, 10_000, 10_000, DUE, DUE, timeout=600)
    await env.repo.pool.execute("ANALYZE notify.ent_notification")
    return env


@pytest.mark.timeout(900)
@pytest.mark.parametrize("name", list(QUERIES))
async def test_each_claim_query_visits_about_as_many_rows_as_it_returns(big: Env, name: str) -> None:
    async with big.repo.pool.acquire() as conn:
        tx = conn.transaction()
        await tx.start()
        try:
            plan = await conn.fetchval(f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {q(name)}", *QUERIES[name])
        finally:
            await tx.rollback()
        timings = []
        for _ in range(20):
            tx = conn.transaction()
            await tx.start()
            started = time.perf_counter()
            await conn.fetch(q(name), *QUERIES[name])
            timings.append(time.perf_counter() - started)
            await tx.rollback()
    root = plan[0]["Plan"]
    nodes = _walk(root)
    returned = root["Actual Rows"]
    discarded = sum(n.get("Rows Removed by Filter", 0) + n.get("Rows Removed by Index Recheck", 0) for n in nodes)
    seq_scans = [n for n in nodes if n["Node Type"] == "Seq Scan" and n.get("Relation Name") == "ent_notification"]
    buffers = root.get("Shared Hit Blocks", 0) + root.get("Shared Read Blocks", 0)
    p95_ms = percentile(timings, 95) * 1000
    print(f"{name}: returned {returned}, discarded {discarded}, buffers {buffers}, p95 {p95_ms:.2f} ms ({ROWS} rows)")
    assert not seq_scans, f"{name} scans the whole table"
    assert discarded <= 10 + returned // 5, f"{name} visited {discarded} rows it did not return"
    assert buffers < 2_000, f"{name} touched {buffers} buffers"
    assert p95_ms <= 20, f"{name} p95 {p95_ms:.1f} ms"
