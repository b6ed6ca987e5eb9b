"""The worker process: one Temporal worker hosting polls, children and activities, plus the health server.

`WorkerManager(settings).start()/stop()` is the programmatic form of `xnovu worker start` (README "Python API").
The manager owns the running state, so it is also the one that says whether it is healthy (`health()`), what it is
doing (`status()`) and what the database gauges read (`sample_gauges()`); the health server only serves those.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from temporalio.client import Client
from temporalio.worker import Worker

from xnovu import __version__
from xnovu.config import Settings
from xnovu.core.backlog import SAMPLE_ROWS, Backlog, summarize
from xnovu.core.models import PollKind
from xnovu.db.fleet import FleetMember, fleet_status
from xnovu.db.repository import Repository
from xnovu.db.retention import last_prune, table_sizes
from xnovu.metrics import METRICS
from xnovu.novu.client import NovuClient
from xnovu.novu.ratelimit import TokenBudget
from xnovu.temporal.activities import XnovuActivities
from xnovu.temporal.rule_activities import RuleActivities
from xnovu.tracing import Tracing
from xnovu.worker.composition import Components, claim_limits, fleet_scope
from xnovu.worker.fleet import FleetPresence, member_id
from xnovu.worker.health import HealthServer
from xnovu.worker.wakeup import WakeupListener

log = logging.getLogger(__name__)

#: A probe answers within this, whatever hangs behind it.
PROBE_TIMEOUT_S = 2.0
#: Scrapes closer together than this reuse the last database sample (several Prometheus replicas, a dashboard).
SAMPLE_MIN_INTERVAL_S = 5.0


class WorkerManager:
    """Starts and stops the worker, its connections and the health server, in the right order."""

    def __init__(
        self,
        settings: Settings,
        *,
        health: bool = True,
        connect_timeout_s: float = 60.0,
        tracing: Tracing | None = None,
    ) -> None:
        self.settings = settings
        #: Decided by the entry point (xnovu.tracing.tracing_from_environ), which also shuts it down.
        self.tracing = tracing or Tracing.off()
        self.components = Components(settings, self.tracing)
        self.gauges_sampled_at = 0.0
        self.connect_timeout_s = connect_timeout_s
        self.started_at = time.time()
        self._worker_task: asyncio.Task[None] | None = None
        self._health: HealthServer | None = None
        self._with_health = health
        self._fleet: FleetPresence | None = None

    # The parts, as built by the composition root (None until `start()` got that far).

    @property
    def repo(self) -> Repository | None:
        return self.components.repo

    @property
    def client(self) -> Client | None:
        return self.components.client

    @property
    def novu(self) -> NovuClient | None:
        return self.components.novu

    @property
    def budget(self) -> TokenBudget | None:
        return self.components.budget

    @property
    def activities(self) -> XnovuActivities | None:
        return self.components.activities

    @property
    def rule_activities(self) -> RuleActivities | None:
        return self.components.rule_activities

    @property
    def worker(self) -> Worker | None:
        return self.components.worker

    @property
    def wakeup(self) -> WakeupListener | None:
        return self.components.wakeup

    async def start(self) -> None:
        """Connect, check the schema, bootstrap Temporal, start polling and serve /health."""
        s = self.settings
        await self.components.open(self.connect_timeout_s)
        assert self.worker is not None and self.wakeup is not None
        self._worker_task = asyncio.create_task(self._run_workers(), name="temporal-worker")
        self._init_gauges()
        assert self.repo is not None
        # Its slots count in every claim's window from now on (xnovu/db/fleet.py).
        self._fleet = FleetPresence(self.repo.pool, self._fleet_member(), lambda: self.running)
        await self._fleet.start()
        await self.wakeup.start()
        if self._with_health:
            self._health = HealthServer(self, s.worker_health_host, s.worker_health_port)
            await self._health.start()
        log.info(
            "worker started",
            extra={"version": __version__, "task_queue": s.temporal_task_queue, "namespace": s.temporal_namespace},
        )

    def _fleet_member(self) -> FleetMember:
        s = self.settings
        return FleetMember(
            id=member_id(),
            scope=fleet_scope(s),
            workflow_slots=s.temporal_max_concurrent_workflows,
            enterprise_id=s.poll_enterprise_id,
            wakeups=s.wakeup_enabled,
            version=__version__,
        )

    async def _run_workers(self) -> None:
        """The main worker and the poll worker (xnovu/worker/composition.py) as one: if either ends, the other is
        shut down, and the first error propagates (the worker process exits non-zero, as with one worker)."""
        assert self.worker is not None
        workers = [w for w in (self.components.poll_worker, self.worker) if w is not None]
        tasks = [asyncio.create_task(w.run(), name=f"temporal-worker-{i}") for i, w in enumerate(workers)]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w, t in zip(workers, tasks, strict=True):
                if not t.done() and w.is_running:
                    await w.shutdown()
            results = await asyncio.gather(*tasks, return_exceptions=True)
        for r in results:
            if isinstance(r, BaseException):
                raise r

    def _init_gauges(self) -> None:
        """Series the alert rules need from the first scrape: intervals, build info, poll clocks at start time."""
        METRICS.build_info.labels(version=__version__).set(1)
        for kind in PollKind:
            METRICS.poll_interval.labels(kind=kind.value).set(self.settings.interval_seconds(kind.value))
            METRICS.last_poll.labels(kind=kind.value).set(self.started_at)

    @property
    def running(self) -> bool:
        return self._worker_task is not None and not self._worker_task.done()

    @property
    def health_port(self) -> int:
        """The port the health server is bound to (0 when it is not running)."""
        return self._health.port if self._health is not None else 0

    async def wait(self) -> None:
        """Until the worker stops (or fails: the exception propagates)."""
        if self._worker_task is not None:
            await self._worker_task

    async def stop(self) -> None:
        """Stop polling for new tasks, let in-flight ones finish (grace period), close everything."""
        if self._fleet is not None:
            await self._fleet.stop()  # first: no claim counts the slots of a worker that drains
            self._fleet = None
        if self.wakeup is not None:
            await self.wakeup.stop()  # first: no new poll runs are asked for while the worker drains
        if self.running:
            # The poll worker first: while the main worker drains, no poll claims rows and starts children on a
            # queue this process no longer serves.
            for w in (self.components.poll_worker, self.worker):
                if w is not None and w.is_running:
                    await w.shutdown()
        if self._worker_task is not None:
            try:
                await self._worker_task
            except Exception:
                log.exception("worker ended with an error")
        if self._health is not None:
            await self._health.stop()
        await self.components.close()
        log.info("worker stopped")

    # -- what the health server serves ------------------------------------------------------------------------

    async def health(self) -> tuple[bool, str]:
        """(healthy, reason): the worker polls Temporal and Postgres answers."""
        if not self.running:
            return False, "the Temporal worker is not running"
        assert self.repo is not None and self.client is not None
        try:
            await asyncio.wait_for(self.repo.ping(), PROBE_TIMEOUT_S)
        except Exception as exc:
            return False, f"Postgres does not answer: {type(exc).__name__}"
        try:
            ok = await asyncio.wait_for(self.client.service_client.check_health(), PROBE_TIMEOUT_S)
        except Exception as exc:
            return False, f"Temporal does not answer: {type(exc).__name__}"
        if not ok:
            return False, "Temporal reports itself unhealthy"
        return True, "ok"

    async def status(self) -> dict[str, Any]:
        """Everything /status shows; no secret is ever part of it (I6)."""
        from xnovu.db.rules import RuleRepository
        from xnovu.temporal.schedules import describe_schedules

        s = self.settings
        report: dict[str, Any] = {
            "version": __version__,
            "uptime_s": round(time.time() - self.started_at, 1),
            "namespace": s.temporal_namespace,
            "task_queue": s.temporal_task_queue,
            "worker_running": self.running,
        }
        healthy, reason = await self.health()
        report["health"] = {"ok": healthy, "reason": reason}
        try:
            assert self.client is not None
            schedules = await asyncio.wait_for(describe_schedules(self.client), PROBE_TIMEOUT_S * 2)
            report["schedules"] = [x.as_dict() for x in schedules]
        except Exception as exc:
            report["schedules"] = {"error": type(exc).__name__}
        try:
            assert self.repo is not None
            report["counts"] = await asyncio.wait_for(self.repo.status_counts(), PROBE_TIMEOUT_S)
            dead = await asyncio.wait_for(self.repo.dead_letter_count(), PROBE_TIMEOUT_S)
            report["dead_lettered"] = dead
            METRICS.dead_letter_total.set(dead)
        except Exception as exc:
            report["counts"] = {"error": type(exc).__name__}
        try:
            assert self.repo is not None
            # docs/priority.md "Operating it": what is due, by urgency and by enterprise, and for how long.
            report["due"] = (await asyncio.wait_for(self._backlog(), PROBE_TIMEOUT_S)).as_dict()
        except Exception as exc:
            report["due"] = {"error": type(exc).__name__}
        try:
            assert self.repo is not None
            # README "Rules": how many CRON rules fire, and every rule that cannot, with the reason.
            report["rules"] = await asyncio.wait_for(RuleRepository(self.repo).status(), PROBE_TIMEOUT_S)
        except Exception as exc:
            report["rules"] = {"error": type(exc).__name__}
        try:
            assert self.repo is not None
            # docs/retention.md: how big xnovu's tables are (from the catalogue, no table is read), and the last prune.
            report["tables"] = await asyncio.wait_for(table_sizes(self.repo.pool), PROBE_TIMEOUT_S)
            last = await asyncio.wait_for(last_prune(self.repo.pool), PROBE_TIMEOUT_S)
            report["last_prune"] = last.as_dict() if last is not None else None
        except Exception as exc:
            report["tables"] = {"error": type(exc).__name__}
        if self.activities is not None:
            report["last_poll"] = {
                kind: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))
                for kind, ts in self.activities.clock.last_poll.items()
            }
        if self.budget is not None:
            report["novu_token_budget"] = self.budget.snapshot()
        report["tracing"] = self.tracing.state.as_dict()
        if self.wakeup is not None:
            report["wakeup"] = self.wakeup.status()
        try:
            assert self.repo is not None
            # docs/priority.md "Temporal's task queue": the slots of the workers seen, and the rows window they make.
            seen = await asyncio.wait_for(fleet_status(self.repo.pool, fleet_scope(s)), PROBE_TIMEOUT_S)
            limits = claim_limits(s).for_fleet(seen["workflow_slots"])
            report["fleet"] = {**seen, "rows_window": limits.max_rows}
        except Exception as exc:
            report["fleet"] = {"error": type(exc).__name__}
        return report

    async def _backlog(self) -> Backlog:
        """The due backlog (bounded sample, xnovu/core/backlog.py), also set on the /metrics gauges."""
        assert self.repo is not None
        backlog = summarize(await self.repo.due_backlog(SAMPLE_ROWS))
        METRICS.observe_backlog(backlog)
        return backlog

    async def sample_gauges(self) -> None:
        """Refresh the gauges that describe the database, at most every SAMPLE_MIN_INTERVAL_S, within the probe
        timeout.

        A failed sample leaves the last values (and their timestamp, `xnovu_db_gauges_sampled_timestamp_seconds`), so
        a database outage shows as a stale sample and a failing /health, not as a gap in every panel.
        """
        METRICS.worker_running.set(1 if self.running else 0)
        now = time.time()
        if self.repo is None or now - self.gauges_sampled_at < SAMPLE_MIN_INTERVAL_S:
            return
        self.gauges_sampled_at = now
        from xnovu.db.budget import EVENTS_BUCKET

        snapshot = self.budget.snapshot() if self.budget is not None else None
        rate = snapshot["rate_per_s"] if snapshot else self.settings.novu_rate_limit_rps
        capacity = snapshot["capacity"] if snapshot else max(rate, 100.0)
        try:
            sample = await asyncio.wait_for(
                self.repo.observability_sample(EVENTS_BUCKET, rate, capacity), PROBE_TIMEOUT_S
            )
        except Exception as exc:
            log.warning("could not sample the database gauges", extra={"error": type(exc).__name__})
            return
        try:
            await asyncio.wait_for(self._backlog(), PROBE_TIMEOUT_S)
        except Exception as exc:
            log.warning("could not sample the due backlog", extra={"error": type(exc).__name__})
        METRICS.dead_letter_total.set(sample["dead_lettered"] or 0)
        METRICS.leases_expired.set(sample["leases_expired"] or 0)
        METRICS.lease_overrun.set(sample["lease_overrun_s"] or 0)
        METRICS.budget_rate.set(rate)
        METRICS.budget_capacity.set(capacity)
        # Before the first Novu request there is no budget row: the bucket is full.
        tokens = sample["budget_tokens"]
        METRICS.budget_tokens.set(capacity if tokens is None else tokens)
        METRICS.sampled_at.set(now)
