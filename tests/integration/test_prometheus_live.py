"""A real Prometheus scrapes a live worker: it loads ops/prometheus/alerts.yml, evaluates every query of the Grafana
dashboard to data, and the alerts fire: XnovuNovuPlanLimitReached on the worker's first 402 (the send held, not
failed), XnovuWorkerDown once the worker stops and once no worker is left to scrape at all.

tests/unit/test_observability_files.py checks the same files statically and through `promtool test rules`.
"""

from __future__ import annotations

import asyncio
import math
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.observability import ALERTS_PATH, alert_rules, alerts, dashboard_exprs
from tests.prometheus import PROMETHEUS, grafana_to_promql, running_prometheus
from tests.support import Env, eventually
from xnovu.devtools.stack import free_port
from xnovu.temporal import activities

pytestmark = pytest.mark.skipif(PROMETHEUS is None, reason="prometheus not installed (apt-get install prometheus)")

#: XnovuWorkerDown as written, in a group of its own with `for: 0s`, so the test need not wait out two minutes.
FAST_GROUP = "xnovu-for-0s"


def _fast_worker_down(base: Path) -> Path:
    [rule] = [dict(r) for r in alert_rules() if r["alert"] == "XnovuWorkerDown"]
    rule["for"] = "0s"
    path = base / "fast.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": FAST_GROUP, "rules": [rule]}]}), encoding="utf-8")
    return path


async def test_a_real_prometheus_scrapes_a_live_worker_and_the_alerts_fire(
    env: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A held attempt retries every 30 s, and the worker's shutdown waits for it: 1 s keeps the test short.
    monkeypatch.setattr(activities, "CONFIG_ERROR_RETRY", timedelta(seconds=1))
    [group] = alerts()["groups"]
    port = free_port()
    target = f"127.0.0.1:{port}"
    with running_prometheus(tmp_path / "prometheus", [ALERTS_PATH, _fast_worker_down(tmp_path)], [target]) as prom:
        wf = await env.workflow("welcome")
        async with env.worker(worker_health_port=port):
            # The 402 series is scraped before any 402 of this worker (at 0 in a fresh process; the suite's process
            # may have counted some already): the first 402 is an increase.
            plan_limit = 'xnovu_novu_requests_total{status_code="402"}'

            async def scraped() -> bool:
                return await prom.value(plan_limit) is not None

            await eventually(scraped, timeout=15)
            [sent] = await env.insert(wf)
            await eventually(lambda: env.all_in([sent], "SENT"), timeout=20)

            rules = await prom.rule_groups()
            assert {r["name"]: r["health"] for r in rules[group["name"]]} == {
                r["alert"]: "ok" for r in group["rules"]
            }, prom.log()

            env.configure_emulator(config_error_status=402)
            [held] = await env.insert(wf)
            [plan] = await eventually(lambda: prom.alerts(group["name"], "XnovuNovuPlanLimitReached"), timeout=15)
            assert re.fullmatch(
                r"Novu's plan limit is reached: HTTP 402 \([1-9]\d* in the last 5 minutes\)",
                plan["annotations"]["summary"],
            ), plan
            row = await env.row(held)
            assert (row["status"], row["attempts"], row["dead_lettered_at"]) == ("PROCESSING", 1, None), "held"
            assert await prom.alerts(group["name"], "XnovuNovuKeyRejected") == []
            assert await prom.alerts(FAST_GROUP, "XnovuWorkerDown") == []

            # Every query of the dashboard has data, the 402 panel and the held attempts' included.
            exprs = dashboard_exprs()
            results = await asyncio.gather(*(prom.query(grafana_to_promql(expr)) for _, expr in exprs))
            empty = [t for (t, _), r in zip(exprs, results, strict=True) if not any(math.isfinite(v) for _, v in r)]
            assert not empty, f"no data for: {empty}"
            for title, expr in exprs:
                if title.startswith(("Novu plan limit reached: 402", "Attempts held")):
                    assert (await prom.value(grafana_to_promql(expr)) or 0) >= 1, title

            # The plan allows more: the held attempt finishes, the same attempt.
            env.configure_emulator(config_error_status=None)
            await eventually(lambda: env.all_in([held], "SENT"), timeout=10)
            assert (await env.row(held))["attempts"] == 1

        [down] = await eventually(lambda: prom.alerts(FAST_GROUP, "XnovuWorkerDown"), timeout=10)
        assert down["labels"]["instance"] == target
        assert down["annotations"]["summary"] == f"xnovu worker {target} is down or its Temporal worker stopped"

        # The last worker is gone from service discovery: its up series ends, yet the alert fires and the panel
        # reads 0.
        prom.set_targets([])
        workers_up = grafana_to_promql(next(e for t, e in dashboard_exprs() if t.startswith("Workers up")))

        async def none_left() -> list[dict[str, Any]]:
            return [a for a in await prom.alerts(FAST_GROUP, "XnovuWorkerDown") if "instance" not in a["labels"]]

        [gone] = await eventually(none_left, timeout=15)
        assert gone["annotations"]["summary"] == "No xnovu worker is left: Prometheus scrapes none"
        assert await prom.query(workers_up) == [({}, 0.0)]
