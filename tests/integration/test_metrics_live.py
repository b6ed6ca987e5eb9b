"""/metrics of a live worker against what the dashboard and the alert rules query, and the database gauges."""

from __future__ import annotations

import time

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.observability import PROMETHEUS_SYNTHETIC, alert_rules, dashboard_exprs, metric_names
from tests.support import Env, eventually


def _samples(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((sample.labels, sample.value))
    return out


async def test_every_metric_the_dashboard_and_alerts_query_is_exported_by_a_live_worker(env: Env) -> None:
    wf = await env.workflow("welcome")
    [nid] = await env.insert(wf)
    started = time.time()
    async with env.worker() as manager:
        await eventually(lambda: env.all_in([nid], "SENT"), timeout=30)
        assert manager.health_port
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{manager.health_port}", timeout=10) as http:
            response = await http.get("/metrics")
    assert response.status_code == 200
    samples = _samples(response.text)

    referenced = {(where, name) for where, expr in dashboard_exprs() for name in metric_names(expr)}
    referenced |= {(rule["alert"], name) for rule in alert_rules() for name in metric_names(rule["expr"])}
    assert referenced
    missing = sorted((where, name) for where, name in referenced if name not in samples.keys() | PROMETHEUS_SYNTHETIC)
    assert not missing, f"queried but not exported by /metrics: {missing}"

    def value(name: str, **labels: str) -> float:
        matches = [v for lbl, v in samples[name] if all(lbl.get(k) == x for k, x in labels.items())]
        assert len(matches) == 1, (name, labels, samples.get(name))
        return matches[0]

    assert value("xnovu_worker_running") == 1
    assert value("xnovu_poll_interval_seconds", kind="new") == 1
    assert value("xnovu_last_poll_timestamp_seconds", kind="new") >= started - 1
    assert value("xnovu_dead_letter_rows") == 0
    assert value("xnovu_processing_leases_expired") == 0
    assert value("xnovu_novu_token_budget_capacity") >= 100
    assert value("xnovu_novu_token_budget_tokens") <= value("xnovu_novu_token_budget_capacity")
    assert value("xnovu_notifications_processed_total", outcome="sent") >= 1
    assert value("xnovu_novu_requests_total", status_code="201") >= 1


async def test_database_gauges_count_dead_letters_and_expired_leases(env: Env) -> None:
    wf = await env.workflow("welcome")
    expired, dead, fresh = await env.insert(wf, 3)
    await env.execute(
        "UPDATE notify.ent_notification SET notification_status = 'PROCESSING', attempts = 1,"
        " next_attempt_at = now() - interval '10 minutes' WHERE id = $1",
        expired,
    )
    await env.execute(
        "UPDATE notify.ent_notification SET notification_status = 'PROCESSING', attempts = 1,"
        " next_attempt_at = now() + interval '10 minutes' WHERE id = $1",
        fresh,
    )
    await env.execute(
        "UPDATE notify.ent_notification SET notification_status = 'FAILED', dead_lettered_at = now() WHERE id = $1",
        dead,
    )
    sample = await env.repo.observability_sample("novu-events", 60.0, 100.0)
    assert sample["dead_lettered"] == 1
    assert sample["leases_expired"] == 1
    assert 590 <= (sample["lease_overrun_s"] or 0) <= 700
    assert sample["budget_tokens"] is None  # no Novu request yet: no budget row


async def test_metrics_scrapes_close_together_reuse_one_database_sample(env: Env) -> None:
    async with env.worker(poll_interval_ms=86_400_000) as manager:
        manager.gauges_sampled_at = 0.0
        await manager.sample_gauges()
        first = manager.gauges_sampled_at
        assert first > 0
        await manager.sample_gauges()
        assert manager.gauges_sampled_at == first
