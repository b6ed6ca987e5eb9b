"""Operators see urgency and fair share (docs/priority.md "Operating it"): the due backlog and the oldest due age by
urgency and by enterprise in /status, `xnovu worker health` and /metrics, with bounded labels, from a sample that
stays cheap on a table of millions of rows.

Run: pytest tests/integration/test_priority_ops.py --basetemp=/tmp/pt-prioops
"""

from __future__ import annotations

import os
import time
from typing import Any

import httpx
import pytest

from tests.support import Env
from xnovu.core.backlog import OTHER, SAMPLE_ROWS, summarize
from xnovu.db.queries import q
from xnovu.devtools.bench.phases import percentile

A = "aaaaaaaa-0000-4000-8000-000000000001"
B = "bbbbbbbb-0000-4000-8000-000000000002"

#: Rows with an explicit age, urgency and enterprise ($1 workflow, $2 count, $3 status, $4 age in s, $5 urgency,
#: $6 enterprise, $7 scheduled_for offset in s or NULL, $8 dead-lettered, $9 publish status).
ROWS = """
INSERT INTO notify.ent_notification
  (name, publish_status, notification_workflow_id, notification_status, payload, recipients, enterprise_id,
   updated_at, next_attempt_at, scheduled_for, xnovu_priority, attempts, dead_lettered_at)
SELECT 'n' || g, $9::text::shared_types.publish_status, $1, $3::text::shared_types.notification_status, '{}'::jsonb,
  ARRAY[gen_random_uuid()], $6::uuid, now() - make_interval(secs => $4::float8),
  CASE WHEN $3 = 'FAILED' THEN now() - make_interval(secs => $4::float8) END,
  CASE WHEN $7::float8 IS NOT NULL THEN now() + make_interval(secs => $7::float8) END,
  $5, CASE WHEN $3 = 'FAILED' THEN 1 ELSE 0 END, CASE WHEN $8 THEN now() END
FROM generate_series(1, $2) AS g
"""


async def _rows(
    env: Env,
    wf: int,
    n: int,
    *,
    status: str = "PENDING",
    age_s: float = 0.0,
    urgency: int = 0,
    enterprise: str | None = None,
    scheduled_in_s: float | None = None,
    dead: bool = False,
    publish: str = "PUBLISH",
) -> None:
    await env.repo.pool.execute(
        ROWS, wf, n, status, age_s, urgency, enterprise, scheduled_in_s, dead, publish, timeout=600
    )


async def test_the_due_backlog_by_urgency_and_by_enterprise_counts_only_what_a_claim_could_take(env: Env) -> None:
    wf = await env.workflow("welcome")
    await _rows(env, wf, 30, age_s=60, enterprise=A)  # a campaign of A
    await _rows(env, wf, 2, age_s=120, urgency=2, enterprise=B)  # B's emergencies, due for 2 minutes
    await _rows(env, wf, 1, status="FAILED", age_s=30)  # a retry due, no enterprise
    await _rows(env, wf, 1, urgency=2, enterprise=B, scheduled_in_s=3_600)  # not due yet
    await _rows(env, wf, 1, urgency=2, enterprise=B, publish="DRAFT")  # unpublished
    await _rows(env, wf, 1, status="FAILED", age_s=30, dead=True)  # dead-lettered
    await _rows(env, wf, 1, status="SENT", enterprise=A)

    backlog = summarize(await env.repo.due_backlog(SAMPLE_ROWS))
    assert {k: v.due for k, v in backlog.by_urgency.items()} == {"2": 2, "0": 31}
    assert 119 <= backlog.by_urgency["2"].oldest_s <= 130
    assert {k: v.due for k, v in backlog.by_enterprise.items()} == {A: 30, B: 2, "none": 1}
    assert backlog.highest_urgency == 2 and backlog.urgent_oldest_s == backlog.by_urgency["2"].oldest_s
    assert not backlog.capped

    # Bounded labels: the largest backlogs by name, the rest summed as "other".
    top = summarize(await env.repo.due_backlog(SAMPLE_ROWS), top_enterprises=1)
    assert {k: v.due for k, v in top.by_enterprise.items()} == {A: 30, OTHER: 3}
    assert top.by_enterprise[OTHER].oldest_s == pytest.approx(backlog.by_enterprise[B].oldest_s, abs=1)


async def test_status_health_and_metrics_show_the_due_backlog(env: Env) -> None:
    wf = await env.workflow("welcome")
    await _rows(env, wf, 3, age_s=90, urgency=1, enterprise=B)
    await _rows(env, wf, 5, age_s=10, enterprise=A)
    async with env.worker(poll_interval_ms=86_400_000, wakeup_enabled=False) as manager:
        # The poll schedule does not fire for a day and wake-ups are off: the rows stay due.
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{manager.health_port}", timeout=10) as http:
            status = (await http.get("/status")).json()
            metrics = (await http.get("/metrics")).text
    due = status["due"]
    assert due["by_urgency"]["1"]["due"] == 3 and due["by_urgency"]["0"]["due"] == 5
    assert due["by_enterprise"][B]["due"] == 3 and due["highest_urgency"] == 1
    assert 89 <= due["urgent_oldest_s"] < 120
    assert 'xnovu_due_backlog_rows{urgency="1"} 3.0' in metrics
    assert f'xnovu_due_backlog_by_enterprise_rows{{enterprise="{A}"}} 5.0' in metrics
    assert "xnovu_due_urgent_oldest_age_seconds 9" in metrics  # 90-something seconds
    assert "xnovu_due_highest_urgency 1.0" in metrics


def _walk(plan: dict[str, Any]) -> list[dict[str, Any]]:
    nodes = [plan]
    for child in plan.get("Plans", []):
        nodes.extend(_walk(child))
    return nodes


SCALE_ROWS = int(os.environ.get("XNOVU_SCALE_ROWS", "200000"))


async def _explain_backlog(env: Env) -> tuple[list[dict[str, Any]], float, Any]:
    async with env.repo.pool.acquire() as conn:
        plan = await conn.fetchval(f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {q('due_backlog')}", SAMPLE_ROWS)
        timings = []
        for _ in range(10):
            started = time.perf_counter()
            rows = await conn.fetch(q("due_backlog"), SAMPLE_ROWS)
            timings.append(time.perf_counter() - started)
    return _walk(plan[0]["Plan"]), percentile(timings, 95) * 1000, summarize(dict(r) for r in rows)


def _read(nodes: list[dict[str, Any]]) -> int:
    table = [n for n in nodes if n.get("Relation Name") == "ent_notification"]
    return sum(n["Actual Rows"] * n.get("Actual Loops", 1) for n in table)


#: Indexes that lead with urgency or hold urgent rows only: 0012's fair-share claim indexes and 0013's partial ones.
URGENT_READERS = {
    "ent_notification_xnovu_new_fair_idx",
    "ent_notification_xnovu_scheduled_fair_idx",
    "ent_notification_xnovu_retry_fair_idx",
    "ent_notification_xnovu_urgent_new_idx",
    "ent_notification_xnovu_urgent_scheduled_idx",
    "ent_notification_xnovu_urgent_retry_idx",
}


@pytest.mark.timeout(900)
async def test_the_backlog_sample_stays_cheap_and_sees_urgent_rows_behind_a_backlog_of_any_size(env: Env) -> None:
    """The worst case for the sample: the whole table is a due normal backlog (one enterprise's campaign), and the
    urgent rows are the newest. The sample reads a bounded number of rows in due order, still finds every urgent
    row exactly (through an index that leads with urgency or holds urgent rows only), and never scans the table.
    Then an urgent backlog larger than the sample: the read stays bounded (0013's due-ordered partial index; 0012's
    fair-share index alone would read every urgent row: 30 005 rows and 1 028 buffers for that part, against
    10 000 and 254 with 0013, measured on 200 000 rows)."""
    wf = await env.workflow("welcome")
    await _rows(env, wf, SCALE_ROWS, age_s=600, enterprise=A)
    await _rows(env, wf, 5, age_s=45, urgency=3, enterprise=B)
    await env.execute("ANALYZE notify.ent_notification")
    nodes, p95_ms, backlog = await _explain_backlog(env)
    seq_scans = [n for n in nodes if n["Node Type"] == "Seq Scan" and n.get("Relation Name") == "ent_notification"]
    read = _read(nodes)
    print(
        f"\ndue_backlog on {SCALE_ROWS} due rows: read {read} rows, p95 {p95_ms:.1f} ms, "
        f"urgent {backlog.by_urgency['3'].due} oldest {backlog.urgent_oldest_s:.0f} s, capped {backlog.capped}"
    )
    assert not seq_scans, "the sample scans the whole table"
    assert {n.get("Index Name") for n in nodes} & URGENT_READERS, "urgent rows are read through their own indexes"
    assert read <= 4 * SAMPLE_ROWS
    assert backlog.capped and backlog.by_urgency["0"].due == SAMPLE_ROWS
    assert backlog.by_urgency["3"].due == 5 and 44 <= backlog.urgent_oldest_s < 60
    assert backlog.by_urgency["0"].oldest_s >= 599  # the oldest due age stays exact when the counts are capped
    assert p95_ms <= 200, f"p95 {p95_ms:.1f} ms"

    await _rows(env, wf, 3 * SAMPLE_ROWS, age_s=900, urgency=1, enterprise=B)  # an urgent backlog beyond the sample
    await env.execute("ANALYZE notify.ent_notification")
    nodes, p95_ms, backlog = await _explain_backlog(env)
    read = _read(nodes)
    print(f"with {3 * SAMPLE_ROWS} urgent rows due as well: read {read} rows, p95 {p95_ms:.1f} ms")
    assert read <= 4 * SAMPLE_ROWS + 10, "the urgent part reads at most the sample, however many urgent rows are due"
    assert backlog.highest_urgency == 3 and 44 <= backlog.urgent_oldest_s < 60
    assert p95_ms <= 200, f"p95 {p95_ms:.1f} ms"
