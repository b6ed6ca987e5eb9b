"""Health server (SPEC §9): /health for probes, /status for operators, /metrics for Prometheus.

Starlette app served by uvicorn inside the worker's event loop; signals stay with the worker (it decides
how to shut down), so uvicorn's own signal capture is switched off.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Generator
from typing import TYPE_CHECKING, Any

import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from xnovu import __version__
from xnovu.metrics import METRICS

if TYPE_CHECKING:
    from xnovu.worker.manager import WorkerManager

log = logging.getLogger(__name__)

#: A probe answers within this, whatever hangs behind it.
PROBE_TIMEOUT_S = 2.0
#: Scrapes closer together than this reuse the last database sample (several Prometheus replicas, a dashboard).
SAMPLE_MIN_INTERVAL_S = 5.0


class _QuietServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


async def check_health(manager: WorkerManager) -> tuple[bool, str]:
    """(healthy, reason): the worker polls Temporal and Postgres answers."""
    if not manager.running:
        return False, "the Temporal worker is not running"
    assert manager.repo is not None and manager.client is not None
    try:
        await asyncio.wait_for(manager.repo.ping(), PROBE_TIMEOUT_S)
    except Exception as exc:
        return False, f"Postgres does not answer: {type(exc).__name__}"
    try:
        ok = await asyncio.wait_for(manager.client.service_client.check_health(), PROBE_TIMEOUT_S)
    except Exception as exc:
        return False, f"Temporal does not answer: {type(exc).__name__}"
    if not ok:
        return False, "Temporal reports itself unhealthy"
    return True, "ok"


async def status_report(manager: WorkerManager) -> dict[str, Any]:
    """Everything /status shows; no secret is ever part of it (I6)."""
    from xnovu.temporal.schedules import describe_schedules

    s = manager.settings
    report: dict[str, Any] = {
        "version": __version__,
        "uptime_s": round(time.time() - manager.started_at, 1),
        "namespace": s.temporal_namespace,
        "task_queue": s.temporal_task_queue,
        "worker_running": manager.running,
    }
    healthy, reason = await check_health(manager)
    report["health"] = {"ok": healthy, "reason": reason}
    try:
        assert manager.client is not None
        schedules = await asyncio.wait_for(describe_schedules(manager.client), PROBE_TIMEOUT_S * 2)
        report["schedules"] = [x.as_dict() for x in schedules]
    except Exception as exc:
        report["schedules"] = {"error": type(exc).__name__}
    try:
        assert manager.repo is not None
        report["counts"] = await asyncio.wait_for(manager.repo.status_counts(), PROBE_TIMEOUT_S)
        dead = await asyncio.wait_for(manager.repo.dead_letter_count(), PROBE_TIMEOUT_S)
        report["dead_lettered"] = dead
        METRICS.dead_letter_total.set(dead)
    except Exception as exc:
        report["counts"] = {"error": type(exc).__name__}
    try:
        assert manager.repo is not None
        from xnovu.db.rules import RuleRepository

        # README "Rules": how many CRON rules fire, and every rule that cannot, with the reason.
        report["rules"] = await asyncio.wait_for(RuleRepository(manager.repo).status(), PROBE_TIMEOUT_S)
    except Exception as exc:
        report["rules"] = {"error": type(exc).__name__}
    if manager.activities is not None:
        report["last_poll"] = {
            kind: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))
            for kind, ts in manager.activities.clock.last_poll.items()
        }
    if manager.budget is not None:
        report["novu_token_budget"] = manager.budget.snapshot()
    report["tracing"] = manager.tracing.state.as_dict()
    if manager.wakeup is not None:
        report["wakeup"] = manager.wakeup.status()
    return report


async def sample_gauges(manager: WorkerManager) -> None:
    """Refresh the gauges that describe the database, at most every SAMPLE_MIN_INTERVAL_S, within the probe timeout.

    A failed sample leaves the last values (and their timestamp, `xnovu_db_gauges_sampled_timestamp_seconds`), so a
    database outage shows as a stale sample and a failing /health, not as a gap in every panel.
    """
    METRICS.worker_running.set(1 if manager.running else 0)
    now = time.time()
    if manager.repo is None or now - manager.gauges_sampled_at < SAMPLE_MIN_INTERVAL_S:
        return
    manager.gauges_sampled_at = now
    from xnovu.db.budget import EVENTS_BUCKET

    snapshot = manager.budget.snapshot() if manager.budget is not None else None
    rate = snapshot["rate_per_s"] if snapshot else manager.settings.novu_rate_limit_rps
    capacity = snapshot["capacity"] if snapshot else max(rate, 100.0)
    try:
        sample = await asyncio.wait_for(
            manager.repo.observability_sample(EVENTS_BUCKET, rate, capacity), PROBE_TIMEOUT_S
        )
    except Exception as exc:
        log.warning("could not sample the database gauges", extra={"error": type(exc).__name__})
        return
    METRICS.dead_letter_total.set(sample["dead_lettered"] or 0)
    METRICS.leases_expired.set(sample["leases_expired"] or 0)
    METRICS.lease_overrun.set(sample["lease_overrun_s"] or 0)
    METRICS.budget_rate.set(rate)
    METRICS.budget_capacity.set(capacity)
    # Before the first Novu request there is no budget row: the bucket is full.
    tokens = sample["budget_tokens"]
    METRICS.budget_tokens.set(capacity if tokens is None else tokens)
    METRICS.sampled_at.set(now)


def create_app(manager: WorkerManager) -> Starlette:
    async def health(_: Request) -> Response:
        ok, reason = await check_health(manager)
        return JSONResponse({"status": "ok"} if ok else {"status": "unhealthy", "reason": reason}, 200 if ok else 503)

    async def status(_: Request) -> Response:
        return JSONResponse(await status_report(manager))

    async def metrics(_: Request) -> Response:
        await sample_gauges(manager)
        return Response(generate_latest(METRICS.registry), media_type=CONTENT_TYPE_LATEST)

    return Starlette(
        routes=[Route("/health", health), Route("/status", status), Route("/metrics", metrics)],
    )


class HealthServer:
    """Runs the health app on WORKER_HEALTH_HOST:WORKER_HEALTH_PORT in the current event loop."""

    def __init__(self, manager: WorkerManager) -> None:
        s = manager.settings
        config = uvicorn.Config(
            create_app(manager),
            host=s.worker_health_host,
            port=s.worker_health_port,
            log_level="warning",
            access_log=False,
            lifespan="off",
        )
        self.server = _QuietServer(config)
        self._task: asyncio.Task[None] | None = None

    @property
    def port(self) -> int:
        """The bound port (useful when configured as 0)."""
        for server in self.server.servers:
            for sock in server.sockets:
                return int(sock.getsockname()[1])
        return 0

    async def start(self) -> None:
        self._task = asyncio.create_task(self.server.serve(), name="health-server")
        while not self.server.started:
            if self._task.done():
                self._task.result()  # surfaces a bind error ("address already in use")
                return
            await asyncio.sleep(0.02)
        log.info("health server listening", extra={"port": self.port})

    async def stop(self) -> None:
        self.server.should_exit = True
        if self._task is not None:
            with contextlib.suppress(Exception):
                await self._task
