"""`xnovu bench`: how fast the real pipeline is, measured against what Temporal itself can do on the same server.

A number on its own says little on a shared 2-core laptop or CI box, so every throughput figure is put next to the
**bare-Temporal ceiling** measured in the same run on the same server: N trivial workflows, each running one local
no-op activity, started directly by a client. The pipeline is then measured through the real schedules and polling
(1 s interval), with the real worker, Postgres and the Novu emulator:

    phase        what is timed                                              figure
    ceiling      first client start → last ceiling workflow closed          ceiling_per_s
    fanout       start of a parent that starts them as children, 100 per   fanout_per_s, fanout_ratio
                 run with continue-as-new (the poll's shape) → last closed
    e2e          commit of N single-recipient rows → last row SENT          e2e_per_s, throughput_ratio
    recipients   commit of rows with 100 recipients each → last SENT        recipients_per_s
    latency      commit of one row while idle → Novu receipt (emulator)     latency_p50_s, latency_p99_s
    scheduled    |Novu receipt - scheduled_for| for rows 5-15 s ahead       schedule_error_p50_s, _p99_s
    backlog      commit of a large batch → last SENT                        backlog_per_s
    wake-ups     as latency, but POLL_INTERVAL_MS=10000 and wake-ups on;    wakeup_latency_p50_s, _p99_s,
                 then rows in separate commits → xnovu-poll-new runs        wakeup_runs_per_1000_commits
    listener     a row committed right after the LISTEN connection was     listener_killed_latency_p50_s,
                 killed → Novu receipt (wake-up worker, 10 s interval)      _p99_s
    noisy        A commits a backlog (singles and one big row), then B      noisy_b_urgent_*, noisy_b_normal_*,
                 urgent and normal rows, at 60 tokens/s: commit → Novu      noisy_a_drain_*; noisy_oldest_first_*
                 receipt of B's rows and A's drain against A alone, with
                 SEND_ORDER=priority and oldest-first side by side
    backlog RSS  a worker working for a while on 100 000 waiting rows       rss_backlog_mb
    (all)        peak RSS of the xnovu worker process and its children     rss_mb
    (cost)       CPU of the workers, Temporal and Postgres per item; the    *_cpu_ms_per_*, db_round_trips_*,
                 worker's statements; histories, visibility writes and      history_events_*, actions_*,
                 Cloud actions of the e2e and fanout runs                   visibility_updates_*

The phases before "wake-ups" run with WAKEUP_ENABLED=false, so `latency_*` stays the polled latency at a 1 s
interval and the wake-up figures stand next to it.

Both workers run as subprocesses with the same Temporal slot/cache settings, so neither shares the GIL with the
bench, the emulator or each other, and the worker's memory can be sampled. Each run brings up a fresh stack in a
temporary folder (embedded Postgres, Temporal dev server on SQLite with WAL, emulator), except for the parts whose
DATABASE_URL / TEMPORAL_ADDRESS / NOVU_API_URL are set explicitly. On a shared database or cluster the bench stays in
its own lane: its rows carry a fresh enterprise id the worker is scoped to (POLL_ENTERPRISE_ID), and it uses its own
namespace (`<TEMPORAL_NAMESPACE>-bench`), so a production worker's rows and schedules are never touched.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import shutil
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from temporalio.api.enums.v1 import EventType
from temporalio.client import (
    Client,
    ScheduleActionExecutionStartWorkflow,
    WorkflowExecution,
    WorkflowExecutionStatus,
)

from xnovu.config import Settings
from xnovu.db.repository import NewNotification, Repository, connect, insert_notifications, upsert_workflow
from xnovu.devtools.bench.cost import Persistence, RunCost
from xnovu.devtools.bench.plan import (
    BACKLOG_INSERT_CHUNK,
    BENCH_WORKFLOW_KEY,
    BUSY_HOST_PERCENT,
    EVENT_POLL_S,
    FULL,
    LIMITED_RPS,
    NOISY_HIGHEST_SORT_ORDER,
    PHASE_BASE_S,
    PHASE_MIN_RATE,
    POLL_INTERVAL_MS,
    QUICK,
    SCHEDULE_AHEAD_S,
    STALL_S,
    WAIT_POLL_S,
    WAKEUP_POLL_INTERVAL_MS,
    BenchPlan,
    BenchResult,
    NoisyPlan,
    TrickleRate,
    fair_share_s,
    per_item,
    percentile,
)
from xnovu.devtools.bench.render import result_json, results_table
from xnovu.devtools.bench.sampling import CpuMeter, HostLoad, RssSampler
from xnovu.devtools.stack import ChildProcess, LocalStack, child_environ, free_port
from xnovu.errors import XnovuError
from xnovu.temporal.options import poll_task_queue

log = logging.getLogger(__name__)


# Progress of a set of rows, in one scan of the primary key. It lives here rather than in queries.sql because only
# the benchmark needs it and it reads nothing the product's own queries do not already read.
PROGRESS_SQL = """
SELECT count(*) FILTER (WHERE notification_status = 'SENT') AS sent,
       count(*) FILTER (WHERE notification_status = 'FAILED') AS failed,
       max(processed_at) FILTER (WHERE notification_status = 'SENT') AS last_sent,
       min(error_details ->> 'error') AS error
FROM notify.ent_notification WHERE id = ANY($1::bigint[])
"""
# Recipients Novu acknowledged for a few heavy rows: their progress, when a row alone takes minutes.
RECIPIENT_PROGRESS_SQL = """
SELECT count(*) FROM notify.ent_notification_delivery WHERE notification_id = ANY($1::bigint[]) AND status = 'SENT'
"""
#: Phases of at most this many rows also count acknowledged recipients as progress (cheap for a few rows).
HEAVY_ROWS = 10
# The wake-up listener of the bench's worker (xnovu/worker/wakeup.py names its connection): started after $2, so a
# listener of another worker on a shared database is left alone unless it reconnected during the phase.
LISTENERS_SQL = """
SELECT pid FROM pg_stat_activity WHERE application_name = $1 AND backend_start >= $2
"""
KILL_LISTENERS_SQL = """
SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1 AND backend_start >= $2
"""
# Rows of the backlog-RSS phase that the bench leaves behind: only its own ids, only those not SENT.
DELETE_UNSENT_SQL = """
DELETE FROM notify.ent_notification WHERE id = ANY($1::bigint[]) AND notification_status <> 'SENT'
"""
#: Histories fetched at once when the bench reads what a phase's runs cost.
HISTORY_CONCURRENCY = 16
#: Far enough ahead that every run listed counts, however late it started.
DAY = timedelta(days=1)
#: How long the bench waits for the runs of a phase to close before reading their histories.
RUNS_CLOSE_S = 60.0


def _rfc3339(when: datetime) -> str:
    """A time as Temporal's visibility queries take it (UTC, microseconds)."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that makes a child `xnovu` process build exactly `settings` (secrets included, unlogged)."""
    return child_environ(settings)


# -- one run --------------------------------------------------------------------------------------------------


@dataclass
class Phase:
    """A progress-bar line for one phase, and its limits."""

    name: str
    total: int
    task: TaskID
    deadline: float = 0.0
    last_progress_at: float = field(default_factory=time.monotonic)
    last_done: int = -1

    def tick(self, done: int, what: str) -> None:
        """Note progress; raise a readable error when the phase stalls or runs out of time."""
        now = time.monotonic()
        if done != self.last_done:
            self.last_done, self.last_progress_at = done, now
        elif now - self.last_progress_at > STALL_S:
            raise XnovuError(f"bench phase {self.name!r} stalled: {what}, no progress for {STALL_S:.0f} s")
        if now > self.deadline:
            raise XnovuError(f"bench phase {self.name!r} timed out: {what}")


class Bench:
    """One benchmark run against a started stack."""

    def __init__(self, settings: Settings, base: Path, plan: BenchPlan, progress: Progress) -> None:
        tag = uuid.uuid4().hex[:8]
        self.tag = tag
        self.plan = plan
        self.base = base
        self.progress = progress
        self.enterprise_id = str(uuid.uuid4())
        self.settings = settings.model_copy(
            update={
                "temporal_task_queue": f"xnovu-bench-{tag}",
                "poll_interval_ms": POLL_INTERVAL_MS,
                "failed_poll_interval_ms": POLL_INTERVAL_MS,
                "scheduled_poll_interval_ms": POLL_INTERVAL_MS,
                "poll_enterprise_id": self.enterprise_id,
                "novu_rate_limit_rps": 1_000_000.0,
                "worker_health_host": "127.0.0.1",
                "worker_health_port": free_port(),
                "worker_pid_file": base / "worker.pid",
                "temporal_namespace_retention_days": 1,
                # The polled figures are measured without wake-ups; the wake-up phase turns them on.
                "wakeup_enabled": False,
            }
        )
        self.ceiling_queue = f"xnovu-bench-ceiling-{tag}"
        self.client: Client | None = None
        self.repo: Repository | None = None
        self.emulator = httpx.AsyncClient(base_url=self.settings.novu_api_url, timeout=10)
        self.worker: ChildProcess | None = None
        self.ceiling_worker: ChildProcess | None = None
        self.rss: RssSampler | None = None
        self._rss_task: asyncio.Task[None] | None = None
        self.host_load: HostLoad | None = None
        self._load_task: asyncio.Task[None] | None = None
        self.workflow_id = 0
        self.temporal_pid: int | None = None
        """The Temporal server the bench started (None when TEMPORAL_ADDRESS points at another one)."""
        self.postgres_pid: int | None = None
        """The embedded postmaster (None when DATABASE_URL points at another server)."""
        self.temporal_metrics_url: str | None = None
        """The started Temporal server's Prometheus endpoint, for its persistence writes per item."""
        self.worker_started_at = datetime.now(UTC)
        self.figures: dict[str, float] = {}
        """The cost figures (BenchResult fields) as the phases measure them."""

    # -- set-up and tear-down

    async def setup(self) -> None:
        """Emulator check and config, schema, the bench's Novu workflow row, Temporal namespace and client."""
        from xnovu.temporal.bootstrap import ensure_namespace
        from xnovu.temporal.connection import connect_temporal

        try:
            reply = await self.emulator.get("/emulator/health")
        except httpx.HTTPError as exc:
            raise XnovuError(f"the Novu emulator at {self.settings.novu_api_url} does not answer: {exc}") from None
        if reply.status_code != 200:
            raise XnovuError(
                f"{self.settings.novu_api_url} is not the xnovu Novu emulator (GET /emulator/health gave "
                f"{reply.status_code}); the bench reads receipt times from the emulator, so point NOVU_API_URL at "
                "one (`xnovu emulator`) or unset it"
            )
        await self._emulator_post("/emulator/reset", {"config": True})
        await self._emulator_post("/emulator/config", {"rate_limit_rps": None, "latency_ms": 0})
        self.repo = await connect(self.settings)
        await self.repo.migrate()
        self.workflow_id = await upsert_workflow(
            self.repo, BENCH_WORKFLOW_KEY, name="xnovu bench", enterprise_id=self.enterprise_id
        )
        self.client = await connect_temporal(self.settings)
        await ensure_namespace(self.client, self.settings)

    async def close(self, *, delete_schedules: bool) -> None:
        """Stop both workers and the sampler; on a shared cluster also remove the bench's 1 s schedules."""
        for task in (self._rss_task, self._load_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if delete_schedules and self.client is not None:
            from xnovu.core.models import PollKind
            from xnovu.temporal.schedules import schedule_id

            for kind in PollKind:
                with contextlib.suppress(Exception):
                    await self.client.get_schedule_handle(schedule_id(kind)).delete()
        for proc in (self.ceiling_worker, self.worker):
            if proc is not None:
                await asyncio.to_thread(proc.stop)
        if self.repo is not None:
            await self.repo.close()
        await self.emulator.aclose()

    async def _emulator_post(self, path: str, body: dict[str, Any]) -> None:
        reply = await self.emulator.post(path, json=body)
        if reply.status_code != 200:
            raise XnovuError(f"emulator {path} answered {reply.status_code}: {reply.text[:200]}")

    def _phase(self, name: str, total: int, work: int | None = None) -> Phase:
        """A phase of `total` rows; its time limit grows with `work` (recipients, when rows carry many)."""
        task = self.progress.add_task(name, total=total)
        limit = PHASE_BASE_S + (total if work is None else work) / PHASE_MIN_RATE
        return Phase(name, total, task, deadline=time.monotonic() + limit)

    # -- ceiling

    async def ceiling(self) -> float:
        """Workflows/s of the trivial workflow on a worker configured like the xnovu one."""
        assert self.client is not None
        n = self.plan.ceiling_n
        env = settings_env(self.settings.model_copy(update={"temporal_task_queue": self.ceiling_queue}))
        argv = ["-m", "xnovu.devtools.bench.ceiling"]
        self.ceiling_worker = ChildProcess.spawn("ceiling-worker", argv, env, self.base)
        from xnovu.devtools.bench.ceiling import CEILING_WORKFLOW

        client, queue = self.client, self.ceiling_queue
        warm = [
            await client.start_workflow(CEILING_WORKFLOW, id=f"ceiling-{self.tag}-warm-{i}", task_queue=queue)
            for i in range(self.plan.warmup)
        ]
        try:
            await asyncio.wait_for(asyncio.gather(*(h.result() for h in warm)), 60)
        except TimeoutError:
            self.ceiling_worker.check()
            raise XnovuError(
                f"the ceiling worker ran no workflow within 60 s (log: {self.ceiling_worker.log_file})"
            ) from None

        phase = self._phase("ceiling: bare Temporal", n)
        prefix = f"ceiling-{self.tag}-run-"
        gate = asyncio.Semaphore(self.plan.start_concurrency)

        async def start(i: int) -> None:
            async with gate:
                await client.start_workflow(CEILING_WORKFLOW, id=f"{prefix}{i}", task_queue=queue)

        meter = self._meter(self.ceiling_worker.pid)
        persistence = await self._persistence()
        client_cpu = time.process_time()
        began = time.time()
        starter = asyncio.gather(*(start(i) for i in range(n)))
        query = f'TaskQueue = "{queue}" AND ExecutionStatus = "Completed"'
        try:
            while True:
                await asyncio.sleep(WAIT_POLL_S)
                done = (await client.count_workflows(query)).count - len(warm)
                self.progress.update(phase.task, completed=max(0, done))
                if done >= n and starter.done():
                    break
                self.ceiling_worker.check()
                phase.tick(done, f"{done}/{n} ceiling workflows completed")
            await starter
        finally:
            if not starter.done():
                starter.cancel()
                with contextlib.suppress(BaseException):
                    await starter
        # Close times from the server, not when this loop noticed: the figure does not depend on WAIT_POLL_S.
        last = max(
            [
                wf.close_time
                async for wf in client.list_workflows(f'TaskQueue = "{queue}"')
                if wf.id.startswith(prefix) and wf.close_time is not None
            ]
        )
        cpu = meter.stop()
        self.figures["ceiling_client_cpu_ms_per_workflow"] = per_item(1000 * (time.process_time() - client_cpu), n)
        self._persistence_figures("ceiling_workflow", persistence, await self._persistence(), n)
        self.figures["ceiling_worker_cpu_ms_per_workflow"] = per_item(1000 * cpu["worker"], n)
        self.figures["temporal_cpu_ms_per_ceiling_workflow"] = per_item(1000 * cpu["temporal"], n)
        return n / max(1e-3, last.timestamp() - began)

    async def fanout(self) -> float:
        """Items/s of the no-op fan-out of the poll's shape, on the ceiling worker, with what its runs cost.

        One parent (`BenchFanoutWorkflow`, xnovu/devtools/bench/ceiling.py) starts ceiling_n ceiling workflows as
        children, FANOUT_BATCH per run with continue-as-new between runs: the shape of the xnovu poll with no claim,
        no search attributes, no memo and no trigger. Timed from the parent's start to the last child's close.
        """
        from xnovu.devtools.bench.ceiling import CEILING_WORKFLOW, FANOUT_WORKFLOW, FanoutInput

        assert self.client is not None and self.ceiling_worker is not None
        client, queue, n = self.client, self.ceiling_queue, self.plan.ceiling_n
        phase = self._phase("fanout: the poll's shape, no-op", n)
        prefix = f"fanout-{self.tag}-item-"
        # Every ceiling workflow of the previous phase has completed: completions beyond these are this phase's.
        query = f'TaskQueue = "{queue}" AND WorkflowType = "{CEILING_WORKFLOW}" AND ExecutionStatus = "Completed"'
        done_before = (await client.count_workflows(query)).count
        meter = self._meter(self.ceiling_worker.pid)
        persistence = await self._persistence()
        began = time.time()
        parent = await client.start_workflow(
            FANOUT_WORKFLOW, FanoutInput(prefix, n), id=f"fanout-{self.tag}", task_queue=queue
        )
        while True:
            await asyncio.sleep(WAIT_POLL_S)
            done = (await client.count_workflows(query)).count - done_before
            self.progress.update(phase.task, completed=max(0, done))
            if done >= n:
                break
            self.ceiling_worker.check()
            phase.tick(done, f"{done}/{n} fan-out children completed")
        cpu = meter.stop()
        self._persistence_figures("fanout_item", persistence, await self._persistence(), n)
        await parent.result()
        runs = [
            wf
            async for wf in client.list_workflows(f'TaskQueue = "{queue}"')
            if wf.id.startswith(prefix) or wf.id == parent.id
        ]
        last = max(wf.close_time for wf in runs if wf.id.startswith(prefix) and wf.close_time is not None)
        await asyncio.to_thread(self.ceiling_worker.stop)
        self.figures["fanout_worker_cpu_ms_per_item"] = per_item(1000 * cpu["worker"], n)
        self.figures["temporal_cpu_ms_per_fanout_item"] = per_item(1000 * cpu["temporal"], n)
        cost = await self._run_costs(runs)
        self.figures["history_events_per_fanout_item"] = per_item(cost.history_events, n)
        self.figures["visibility_updates_per_fanout_item"] = per_item(cost.visibility_updates, n)
        self.figures["actions_per_fanout_item"] = per_item(cost.actions, n)
        return n / max(1e-3, last.timestamp() - began)

    # -- what a phase cost

    def _meter(self, worker_pid: int) -> CpuMeter:
        """CPU of the worker doing the phase, the Temporal server and Postgres, from now (0 for those not ours)."""
        return CpuMeter({"worker": worker_pid, "temporal": self.temporal_pid, "postgres": self.postgres_pid}).start()

    async def _persistence(self) -> Persistence | None:
        """The started Temporal server's persistence counters now; None when the server is not the bench's."""
        if self.temporal_metrics_url is None:
            return None
        async with httpx.AsyncClient(timeout=10) as http:
            reply = await http.get(self.temporal_metrics_url)
        reply.raise_for_status()
        return Persistence.parse(
            (sample.name, sample.labels, sample.value)
            for family in text_string_to_metric_families(reply.text)
            for sample in family.samples
        )

    def _persistence_figures(self, item: str, before: Persistence | None, after: Persistence | None, n: int) -> None:
        """server_writes_per_<item> and server_db_ms_per_<item> between two snapshots (nothing without them)."""
        if before is None or after is None:
            return
        used = after.since(before)
        self.figures[f"server_writes_per_{item}"] = per_item(used.writes, n)
        self.figures[f"server_db_ms_per_{item}"] = per_item(1000 * used.busy_s, n)

    async def _round_trips(self) -> float:
        """xnovu_db_round_trips_total of the running xnovu worker (its /metrics)."""
        url = f"http://127.0.0.1:{self.settings.worker_health_port}/metrics"
        async with httpx.AsyncClient(timeout=10) as http:
            reply = await http.get(url)
        reply.raise_for_status()
        for family in text_string_to_metric_families(reply.text):
            for sample in family.samples:
                if sample.name == "xnovu_db_round_trips_total":
                    return float(sample.value)
        raise XnovuError(f"the worker's {url} has no xnovu_db_round_trips_total")

    async def _closed_runs(self, query: str, until: datetime) -> list[WorkflowExecution]:
        """The runs `query` lists that started by `until`, once all of them have closed (their histories final)."""
        assert self.client is not None
        deadline = time.monotonic() + RUNS_CLOSE_S
        while True:
            runs = [wf async for wf in self.client.list_workflows(query) if wf.start_time <= until]
            if all(wf.status != WorkflowExecutionStatus.RUNNING for wf in runs) or time.monotonic() > deadline:
                return runs
            await asyncio.sleep(WAIT_POLL_S)

    async def _run_costs(self, runs: Sequence[WorkflowExecution]) -> RunCost:
        """History events, visibility writes and Cloud actions of `runs`, from their histories (docs/performance.md)."""
        assert self.client is not None
        client = self.client
        cost = RunCost()
        gate = asyncio.Semaphore(HISTORY_CONCURRENCY)

        async def one(wf: WorkflowExecution) -> None:
            async with gate:
                history = await client.get_workflow_handle(wf.id, run_id=wf.run_id).fetch_history()
            types = [EventType.Name(e.event_type) for e in history.events]
            first = history.events[0].workflow_execution_started_event_attributes if history.events else None
            scheduled = first is not None and "TemporalScheduledById" in first.search_attributes.indexed_fields
            cost.add(types, scheduled=scheduled)

        await asyncio.gather(*(one(wf) for wf in runs))
        return cost

    # -- the xnovu worker

    async def start_worker(self, **overrides: Any) -> None:
        """`xnovu worker start` as a subprocess; ready once /health says so (Temporal polled, DB answering)."""
        settings = self.settings.model_copy(update=overrides) if overrides else self.settings
        argv = ["-m", "xnovu", "worker", "start"]
        self.worker_started_at = datetime.now(UTC)
        self.worker = ChildProcess.spawn("worker", argv, settings_env(settings), self.base)
        self.rss = RssSampler(self.worker.process.pid)
        self._rss_task = asyncio.create_task(self.rss.run(), name="bench-rss")
        await self.worker.wait_healthy(f"http://127.0.0.1:{self.settings.worker_health_port}/health", 90)

    async def insert(
        self, count: int, *, recipients: int = 1, scheduled_for: Sequence[datetime | None] | None = None
    ) -> tuple[list[int], list[list[str]], float]:
        """Insert rows in one transaction; (ids, recipients per row, wall-clock time just after the commit)."""
        assert self.repo is not None
        people = [[str(uuid.uuid4()) for _ in range(recipients)] for _ in range(count)]
        rows = [
            NewNotification(
                f"bench {self.tag} #{i}",
                people[i],
                {"bench": self.tag, "i": i},
                scheduled_for=scheduled_for[i] if scheduled_for is not None else None,
            )
            for i in range(count)
        ]
        ids = await insert_notifications(self.repo, self.workflow_id, rows, enterprise_id=self.enterprise_id)
        return ids, people, time.time()

    async def wait_sent(self, ids: list[int], committed: float, phase: Phase) -> float:
        """Seconds from the commit until the last row was SENT (its processed_at, so not rounded to our polling)."""
        assert self.repo is not None and self.worker is not None
        while True:
            row = await self.repo.pool.fetchrow(PROGRESS_SQL, ids)
            assert row is not None
            sent, failed = int(row["sent"]), int(row["failed"])
            self.progress.update(phase.task, completed=sent)
            if sent >= len(ids):
                last: datetime = row["last_sent"]
                return max(1e-3, last.timestamp() - committed)
            self.worker.check()
            error = f" (e.g. {row['error']})" if row["error"] else ""
            progress = sent
            if len(ids) <= HEAVY_ROWS:
                progress += int(await self.repo.pool.fetchval(RECIPIENT_PROGRESS_SQL, ids))
            phase.tick(progress, f"{sent}/{len(ids)} SENT, {failed} FAILED{error}; worker log: {self.worker.log_file}")
            await asyncio.sleep(WAIT_POLL_S)

    async def throughput(self, name: str, count: int, recipients: int = 1) -> float:
        """Rows (x recipients) per second from one committed batch to the last SENT."""
        phase = self._phase(name, count, work=count * recipients)
        ids, _, committed = await self.insert(count, recipients=recipients)
        elapsed = await self.wait_sent(ids, committed, phase)
        return count * recipients / elapsed

    async def e2e(self) -> float:
        """`throughput` of e2e_n single-recipient rows, with what they cost: worker, Temporal and Postgres CPU,
        the worker's statements, and the histories of every run the phase created on the bench's task queue
        (the children and the poll runs, idle ticks of the three schedules included)."""
        assert self.worker is not None
        n = self.plan.e2e_n
        phase = self._phase("e2e: 1 recipient/row", n)
        statements = await self._round_trips()
        meter = self._meter(self.worker.pid)
        persistence = await self._persistence()
        ids, _, committed = await self.insert(n)
        elapsed = await self.wait_sent(ids, committed, phase)
        cpu = meter.stop()
        self._persistence_figures("notification", persistence, await self._persistence(), n)
        statements = await self._round_trips() - statements
        self._cpu_figures("", cpu, n)
        self.figures["db_round_trips_per_notification"] = per_item(statements, n)
        since = datetime.fromtimestamp(committed, UTC)
        # The children on TEMPORAL_TASK_QUEUE and the poll runs on their own queue (xnovu/temporal/options.py).
        queues = (self.settings.temporal_task_queue, poll_task_queue(self.settings.temporal_task_queue))
        runs = await self._closed_runs(
            f'(TaskQueue = "{queues[0]}" OR TaskQueue = "{queues[1]}") AND StartTime >= "{_rfc3339(since)}"',
            since + timedelta(seconds=elapsed),
        )
        cost = await self._run_costs(runs)
        self.figures["history_events_per_notification"] = per_item(cost.history_events, n)
        self.figures["visibility_updates_per_notification"] = per_item(cost.visibility_updates, n)
        self.figures["actions_per_notification"] = per_item(cost.actions, n)
        return n / elapsed

    async def backlog(self) -> float:
        """`throughput` of backlog_n rows, with the worker's, Temporal's and Postgres's CPU per row."""
        assert self.worker is not None
        meter = self._meter(self.worker.pid)
        rate = await self.throughput("backlog drain", self.plan.backlog_n)
        self._cpu_figures("backlog_", meter.stop(), self.plan.backlog_n)
        return rate

    def _cpu_figures(self, prefix: str, cpu: dict[str, float], n: int) -> None:
        for part, name in (("worker", "worker"), ("temporal", "temporal"), ("postgres", "postgres")):
            self.figures[f"{prefix}{name}_cpu_ms_per_notification"] = per_item(1000 * cpu[part], n)

    async def warm_up(self) -> None:
        """A few rows through the whole path first: sandbox imports, pools and caches are not what we measure."""
        phase = self._phase("warm-up", self.plan.warmup)
        ids, _, committed = await self.insert(self.plan.warmup)
        await self.wait_sent(ids, committed, phase)

    async def _events(self) -> dict[str, datetime]:
        """subscriberId → receipt time of every delivery the emulator accepted since the last reset."""
        reply = await self.emulator.get("/emulator/events")
        reply.raise_for_status()
        return {e["subscriberId"]: datetime.fromisoformat(e["receivedAt"]) for e in reply.json()}

    async def _await_receipts(self, subscribers: Sequence[str], phase: Phase, timeout_s: float) -> dict[str, datetime]:
        assert self.worker is not None
        deadline = time.monotonic() + timeout_s
        while True:
            events = await self._events()
            seen = {s: events[s] for s in subscribers if s in events}
            if len(seen) == len(subscribers):
                return seen
            self.worker.check()
            if time.monotonic() > deadline:
                raise XnovuError(
                    f"bench phase {phase.name!r}: {len(seen)}/{len(subscribers)} deliveries reached the emulator "
                    f"within {timeout_s:.0f} s; worker log: {self.worker.log_file}"
                )
            await asyncio.sleep(EVENT_POLL_S)

    async def latency(self, name: str = "latency: commit → Novu") -> list[float]:
        """Commit → Novu receipt of one row at a time while idle, after a random 0-1 s gap (any point of a tick)."""
        n = self.plan.latency_samples
        phase = self._phase(name, n)
        await self._emulator_post("/emulator/reset", {})  # keeps each GET /emulator/events small
        samples: list[float] = []
        for i in range(n):
            await asyncio.sleep(random.uniform(0.0, 1.0))
            _, people, committed = await self.insert(1)
            receipt = await self._await_receipts(people[0], phase, 30.0)
            samples.append(receipt[people[0][0]].timestamp() - committed)
            self.progress.update(phase.task, completed=i + 1)
        return samples

    async def scheduled(self) -> list[float]:
        """|Novu receipt - scheduled_for| for rows due 5-15 s ahead (look-ahead claim, then a durable timer)."""
        n = self.plan.scheduled_rows
        phase = self._phase("scheduled sends", n)
        await self._emulator_post("/emulator/reset", {})
        now = datetime.now(UTC)
        due = [now + timedelta(seconds=random.uniform(*SCHEDULE_AHEAD_S)) for _ in range(n)]
        _, people, _ = await self.insert(n, scheduled_for=due)
        by_subscriber = {p[0]: when for p, when in zip(people, due, strict=True)}
        errors: list[float] = []
        deadline = time.monotonic() + SCHEDULE_AHEAD_S[1] + 60
        assert self.worker is not None
        while len(errors) < n:
            events = await self._events()
            errors = [abs((events[s] - when).total_seconds()) for s, when in by_subscriber.items() if s in events]
            self.progress.update(phase.task, completed=len(errors))
            self.worker.check()
            if time.monotonic() > deadline:
                raise XnovuError(
                    f"bench phase 'scheduled sends': {len(errors)}/{n} delivered by {SCHEDULE_AHEAD_S[1] + 60:.0f} s "
                    f"after insert; worker log: {self.worker.log_file}"
                )
            await asyncio.sleep(WAIT_POLL_S)
        return errors

    async def _poll_new_runs(self) -> tuple[int, int]:
        """(runs started so far, runs in progress) of the xnovu-poll-new schedule."""
        from xnovu.core.models import PollKind
        from xnovu.temporal.schedules import schedule_id

        assert self.client is not None
        d = await self.client.get_schedule_handle(schedule_id(PollKind.NEW)).describe()
        return d.info.num_actions, len(d.info.running_actions)

    async def _poll_new_idle(self) -> int:
        """Runs started so far, once none is in progress (a buffered trigger has started and finished)."""
        deadline = time.monotonic() + STALL_S
        while True:
            taken, running = await self._poll_new_runs()
            if not running or time.monotonic() > deadline:
                return taken
            await asyncio.sleep(WAIT_POLL_S)

    async def wakeups(self) -> tuple[list[float], float]:
        """A fresh worker with wake-ups on and the default 10 s interval: idle latency, then runs per commit."""
        await self._restart_worker(poll_interval_ms=WAKEUP_POLL_INTERVAL_MS, wakeup_enabled=True)
        await self._poll_new_idle()  # the start-up catch-up wake-up is not what we measure
        samples = await self.latency("wake-ups: commit → Novu")
        # Hold the interval ticks off so that every run counted below was started by a wake-up.
        from xnovu.temporal.schedules import ensure_schedules

        assert self.client is not None
        await ensure_schedules(self.client, self.settings.model_copy(update={"poll_interval_ms": 3_600_000}))
        n = self.plan.wakeup_commits
        phase = self._phase("wake-ups: one commit per row", n)
        before = await self._poll_new_idle()
        ids: list[int] = []
        committed = time.time()
        for _ in range(n):
            ids += (await self.insert(1))[0]
        await self.wait_sent(ids, committed, phase)
        runs = await self._poll_new_idle() - before
        return samples, runs * 1000 / n

    async def listener_killed(self) -> list[float]:
        """Commit → Novu receipt of a row committed right after the wake-up worker's LISTEN backend was terminated.

        The wake-up worker of `wakeups` keeps running, with its schedule back at the default 10 s interval. After a
        drop the listener reconnects with backoff and catches up with one wake-up per kind (xnovu/worker/wakeup.py),
        so a commit nobody heard waits for that, at worst for the next tick.
        """
        from xnovu.temporal.schedules import ensure_schedules
        from xnovu.worker.wakeup import APPLICATION_NAME

        assert self.client is not None and self.repo is not None
        await ensure_schedules(
            self.client, self.settings.model_copy(update={"poll_interval_ms": WAKEUP_POLL_INTERVAL_MS})
        )
        n = self.plan.listener_kill_samples
        phase = self._phase("LISTEN connection killed: commit → Novu", n)
        await self._emulator_post("/emulator/reset", {})
        # Our worker's listener started after the worker did (a second of clock skew with the database allowed).
        since = self.worker_started_at - timedelta(seconds=1)
        samples: list[float] = []
        for i in range(n):
            deadline = time.monotonic() + STALL_S
            while not await self.repo.pool.fetch(LISTENERS_SQL, APPLICATION_NAME, since):
                if time.monotonic() > deadline:
                    raise XnovuError(f"the wake-up listener did not reconnect within {STALL_S:.0f} s")
                await asyncio.sleep(WAIT_POLL_S)
            await asyncio.sleep(random.uniform(0.0, 1.0))  # any point of the 10 s tick
            await self.repo.pool.fetch(KILL_LISTENERS_SQL, APPLICATION_NAME, since)
            _, people, committed = await self.insert(1)
            receipt = await self._await_receipts(people[0], phase, WAKEUP_POLL_INTERVAL_MS / 1000 + 30.0)
            samples.append(receipt[people[0][0]].timestamp() - committed)
            self.progress.update(phase.task, completed=i + 1)
        return samples

    async def backlog_rss(self) -> float:
        """Peak worker RSS (MB) while a fresh worker (1 s poll, no wake-ups) works on backlog_rss_rows waiting rows.

        The rows go in first, in a few large transactions, with no worker running; the worker then works for
        backlog_rss_s and is stopped. The rows it did not send are deleted (only this phase's ids, all in the bench's
        own enterprise), and the runs it left open on the bench's task queue are terminated, so a shared database or
        cluster keeps nothing of it.
        """
        assert self.worker is not None and self.repo is not None
        plan = self.plan
        await self._stop_worker()
        phase = self._phase(f"backlog RSS: {plan.backlog_rss_rows} rows waiting", plan.backlog_rss_rows)
        ids: list[int] = []
        for start in range(0, plan.backlog_rss_rows, BACKLOG_INSERT_CHUNK):
            ids += (await self.insert(min(BACKLOG_INSERT_CHUNK, plan.backlog_rss_rows - start)))[0]
        try:
            await self.start_worker(poll_interval_ms=POLL_INTERVAL_MS, wakeup_enabled=False)
            assert self.rss is not None
            until = time.monotonic() + plan.backlog_rss_s
            while time.monotonic() < until:
                await asyncio.sleep(1.0)
                self.worker.check()
                row = await self.repo.pool.fetchrow(PROGRESS_SQL, ids)
                assert row is not None
                self.progress.update(phase.task, completed=int(row["sent"]))
            self.rss.sample()
            peak = self.rss.peak_mb
        finally:
            await self._stop_worker()
            await self.repo.pool.execute(DELETE_UNSENT_SQL, ids)
            await self._terminate_open_runs()
        return peak

    # -- noisy neighbour

    async def noisy(self, *, restore: bool = True) -> dict[str, float]:
        """Issue 17's noisy neighbour: A alone, then A and B with SEND_ORDER=priority, then with oldest-first.

        The worker is not scoped to the bench's enterprise here (the phase needs two), so the bench runs it only on
        a database it started itself. Each run restarts the worker at `rps` tokens/s, 1 s poll, wake-ups on.
        """
        plan = self.plan.noisy
        assert self.repo is not None
        a, b = str(uuid.uuid4()), str(uuid.uuid4())
        urgent = int(
            await self.repo.pool.fetchval(
                "INSERT INTO notify.typ_notification_priority (name, sort_order, publish_status)"
                " VALUES ($1, $2, 'PUBLISH') RETURNING id",
                f"bench {self.tag} emergency",
                NOISY_HIGHEST_SORT_ORDER,
            )
        )
        alone, _, _ = await self._noisy_run(plan, "priority", a, None, urgent)
        drain, b_urgent, b_normal = await self._noisy_run(plan, "priority", a, b, urgent)
        old_drain, old_urgent, old_normal = await self._noisy_run(plan, "oldest-first", a, b, urgent)
        if restore:
            await self._restart_worker()  # the bench's own settings again, for the phases after this one
        return {
            "noisy_b_urgent_p50_s": percentile(b_urgent, 50),
            "noisy_b_urgent_p99_s": percentile(b_urgent, 99),
            "noisy_b_normal_p50_s": percentile(b_normal, 50),
            "noisy_b_normal_p99_s": percentile(b_normal, 99),
            "noisy_b_fair_share_s": fair_share_s(plan),
            "noisy_a_drain_s": drain,
            "noisy_a_alone_drain_s": alone,
            "noisy_a_drain_ratio": drain / alone,
            "noisy_oldest_first_b_urgent_p50_s": percentile(old_urgent, 50),
            "noisy_oldest_first_b_urgent_p99_s": percentile(old_urgent, 99),
            "noisy_oldest_first_b_normal_p50_s": percentile(old_normal, 50),
            "noisy_oldest_first_b_normal_p99_s": percentile(old_normal, 99),
            "noisy_oldest_first_a_drain_s": old_drain,
            "noisy_oldest_first_a_drain_ratio": old_drain / alone,
        }

    async def _noisy_insert(
        self, enterprise: str, recipients: Sequence[int], label: str, priority_id: int | None = None
    ) -> tuple[list[int], list[str], float]:
        """Rows of `enterprise` in one transaction, row i with recipients[i] recipients; (ids, the first recipient
        of each row, wall-clock time just after the commit)."""
        assert self.repo is not None
        people = [[str(uuid.uuid4()) for _ in range(n)] for n in recipients]
        rows = [
            NewNotification(f"bench {self.tag} {label} #{i}", p, {"bench": self.tag}, priority_id=priority_id)
            for i, p in enumerate(people)
        ]
        ids = await insert_notifications(self.repo, self.workflow_id, rows, enterprise_id=enterprise)
        return ids, [p[0] for p in people], time.time()

    async def _noisy_run(
        self, plan: NoisyPlan, order: str, a: str, b: str | None, urgent_priority: int
    ) -> tuple[float, list[float], list[float]]:
        """One run: (A's drain in s, B's urgent latencies, B's normal latencies); B only when `b` is given."""
        assert self.repo is not None
        start = self._restart_worker if self.worker is not None else self.start_worker
        await start(
            novu_rate_limit_rps=plan.rps,
            poll_enterprise_id=None,
            send_order=order,
            wakeup_enabled=True,
            poll_interval_ms=POLL_INTERVAL_MS,
        )
        await self._emulator_post("/emulator/reset", {})
        who = "A alone" if b is None else f"A and B, {order}"
        # Progress in rows and recipients; time limit: three times what A's tokens take at the budget's rate.
        phase = self._phase(
            f"noisy neighbour ({who}): {plan.a_tokens} tokens at {plan.rps:g}/s",
            plan.a_rows + plan.a_big_recipients,
            work=int(3 * plan.a_tokens / plan.rps * PHASE_MIN_RATE),
        )
        # The big row first: oldest first, it is claimed ahead of A's singles (the case the issue describes).
        a_ids, _, a_committed = await self._noisy_insert(a, [plan.a_big_recipients] + [1] * plan.a_rows, "A")
        b_rows: list[tuple[list[str], float]] = []
        if b is not None:
            await asyncio.sleep(plan.b_after_s)
            _, urgent_people, urgent_at = await self._noisy_insert(b, [1] * plan.b_urgent, "B urgent", urgent_priority)
            b_rows.append((urgent_people, urgent_at))
            _, normal_people, normal_at = await self._noisy_insert(b, [1] * plan.b_normal, "B normal")
            b_rows.append((normal_people, normal_at))
        drain = await self._noisy_wait(a_ids, a_committed, phase)
        if not b_rows:
            return drain, [], []
        events = await self._await_receipts([p for people, _ in b_rows for p in people], phase, STALL_S)
        latencies = [[events[p].timestamp() - at for p in people] for people, at in b_rows]
        return drain, latencies[0], latencies[1]

    async def _noisy_wait(self, ids: list[int], committed: float, phase: Phase) -> float:
        """As `wait_sent`, with the big row's acknowledged recipients as progress (it may send alone for minutes)."""
        assert self.repo is not None and self.worker is not None
        big = ids[:1]
        while True:
            row = await self.repo.pool.fetchrow(PROGRESS_SQL, ids)
            assert row is not None
            sent = int(row["sent"])
            recipients = int(await self.repo.pool.fetchval(RECIPIENT_PROGRESS_SQL, big))
            self.progress.update(phase.task, completed=min(sent + recipients, phase.total))
            if sent >= len(ids):
                last: datetime = row["last_sent"]
                return max(1e-3, last.timestamp() - committed)
            self.worker.check()
            phase.tick(sent + recipients, f"{sent}/{len(ids)} of A's rows SENT; worker log: {self.worker.log_file}")
            await asyncio.sleep(WAIT_POLL_S)

    # -- trickle (issue 18): cost and latency at each arrival rate

    async def trickle(self) -> dict[str, float]:
        """Single-row commits at each rate of the plan, first without linger (the behaviour before it), then with the
        worker's settings; and what the schedules cost a day while idle. docs/performance.md "Cost at any arrival
        rate".

        The schedules' ticks are held off (1 h) while the rates run, so every run counted was caused by a commit; the
        idle cost is measured apart, one run of each schedule, and multiplied by its runs a day at the defaults."""
        figures: dict[str, float] = {}
        s = self.settings
        before = {"wakeup_linger_ms": 0, "wakeup_debounce_ms": 100}
        mine = {"wakeup_linger_ms": s.wakeup_linger_ms, "wakeup_debounce_ms": s.wakeup_debounce_ms}
        for variant, overrides in (("nolinger_", before), ("", mine)):
            await self._trickle_worker(overrides)
            for rate in self.plan.trickle.rates:
                actions, p50 = await self._trickle_rate(rate, f"{variant or 'linger '}{rate.name}")
                figures[f"trickle_{variant}{rate.name}_actions_per_notification"] = actions
                figures[f"trickle_{variant}{rate.name}_p50_s"] = p50
        runs, actions = await self._idle_cost()
        figures["trickle_idle_runs_per_day"] = runs
        figures["trickle_idle_actions_per_day"] = actions
        return figures

    async def _trickle_worker(self, overrides: dict[str, Any]) -> None:
        """A worker with wake-ups on at the default interval, then the poll ticks held off."""
        from xnovu.temporal.schedules import ensure_schedules

        assert self.client is not None
        start = self._restart_worker if self.worker is not None else self.start_worker
        await start(poll_interval_ms=WAKEUP_POLL_INTERVAL_MS, wakeup_enabled=True, **overrides)
        held = {f"{k}_interval_ms": 3_600_000 for k in ("poll", "failed_poll", "scheduled_poll")}
        await ensure_schedules(self.client, self.settings.model_copy(update=held))
        await self._poll_new_idle()  # the start-up catch-up wake-up is not what we measure

    async def _trickle_rate(self, rate: TrickleRate, label: str) -> tuple[float, float]:
        """(actions per notification, p50 commit → Novu) of `rate.commits` single-row commits `rate.gap_s` apart."""
        assert self.client is not None
        phase = self._phase(f"trickle {label}", rate.commits, work=int(rate.commits * rate.gap_s * PHASE_MIN_RATE))
        await self._emulator_post("/emulator/reset", {})
        since = datetime.now(UTC)
        committed: dict[str, float] = {}
        next_at = time.monotonic()
        for i in range(rate.commits):
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            next_at += rate.gap_s
            _, people, at = await self.insert(1)
            committed[people[0][0]] = at
            self.progress.update(phase.task, completed=i + 1)
        receipts = await self._await_receipts(list(committed), phase, STALL_S)
        latencies = [receipts[s].timestamp() - at for s, at in committed.items()]
        # Poll runs and children only: the rules sync also runs on the main queue, on its own interval.
        queues = " OR ".join(f'TaskQueue = "{q}"' for q in self._queues())
        types = 'WorkflowType = "PollNotificationsWorkflow" OR WorkflowType = "NotificationTriggerWorkflow"'
        query = f'({queues}) AND ({types}) AND StartTime >= "{_rfc3339(since)}"'
        runs = await self._closed_runs(query, datetime.now(UTC) + DAY)
        cost = await self._run_costs(runs)
        return per_item(cost.actions, rate.commits), percentile(latencies, 50)

    def _queues(self) -> list[str]:
        """The task queues of the poll runs and of the notifications' children."""
        from xnovu.temporal.options import child_task_queue, poll_task_queue

        base = self.settings.temporal_task_queue
        return sorted({base, poll_task_queue(base), child_task_queue(poll_task_queue(base))})

    async def _idle_cost(self) -> tuple[float, float]:
        """(runs, estimated actions) a day of the schedules at their default intervals with nothing to do: one run of
        each is triggered, measured from its history, and counted 86 400 / interval times."""
        from xnovu.core.models import PollKind
        from xnovu.temporal.schedules import RETENTION_ID, RETENTION_INTERVAL, RULES_SYNC_ID, schedule_id

        assert self.client is not None
        defaults = Settings.model_fields
        every = {
            schedule_id(PollKind.NEW): defaults["poll_interval_ms"].default / 1000,
            schedule_id(PollKind.FAILED): defaults["failed_poll_interval_ms"].default / 1000,
            schedule_id(PollKind.SCHEDULED): defaults["scheduled_poll_interval_ms"].default / 1000,
            RULES_SYNC_ID: defaults["rules_sync_interval_ms"].default / 1000,
            RETENTION_ID: RETENTION_INTERVAL.total_seconds(),
        }
        runs = actions = 0.0
        for sid, interval_s in every.items():
            handle = self.client.get_schedule_handle(sid)
            before = (await handle.describe()).info.num_actions
            await handle.trigger()
            deadline = time.monotonic() + STALL_S
            while True:
                info = (await handle.describe()).info
                if info.num_actions > before and not info.running_actions:
                    break
                if time.monotonic() > deadline:
                    raise XnovuError(f"bench phase 'trickle': the run of {sid} did not end in {STALL_S:.0f} s")
                await asyncio.sleep(WAIT_POLL_S)
            action = info.recent_actions[-1].action
            assert isinstance(action, ScheduleActionExecutionStartWorkflow)
            chain = [wf async for wf in self.client.list_workflows(f'WorkflowId = "{action.workflow_id}"')]
            cost = await self._run_costs(chain)
            runs += 86_400 / interval_s
            actions += 86_400 / interval_s * cost.actions
        return runs, actions

    async def _terminate_open_runs(self) -> None:
        """Terminate what a stopped worker left running on the bench's task queue (its in-flight attempts)."""
        assert self.client is not None
        client = self.client
        queue = self.settings.temporal_task_queue
        query = f'(TaskQueue = "{queue}" OR TaskQueue = "{poll_task_queue(queue)}") AND ExecutionStatus = "Running"'
        gate = asyncio.Semaphore(HISTORY_CONCURRENCY)

        async def terminate(wf: WorkflowExecution) -> None:
            async with gate:
                with contextlib.suppress(Exception):  # it may have closed meanwhile
                    await client.get_workflow_handle(wf.id, run_id=wf.run_id).terminate(reason="xnovu bench ended")

        await asyncio.gather(*[terminate(wf) async for wf in client.list_workflows(query)])

    async def run(
        self, stack_pids: Sequence[int] = (), *, temporal_pid: int | None = None, postgres_pid: int | None = None
    ) -> BenchResult:
        """All phases in order: ceiling first (nothing else on the server), then the pipeline from light to heavy.

        `stack_pids`: processes of the stack that are not children of this one (Postgres), for `host_load`;
        `temporal_pid`, `postgres_pid`: the servers the bench started, whose CPU it measures per item.
        """
        plan = self.plan
        self.temporal_pid, self.postgres_pid = temporal_pid, postgres_pid
        self.host_load = HostLoad([os.getpid(), *stack_pids])
        self._load_task = asyncio.create_task(self.host_load.run(), name="bench-host-load")
        ceiling = await self.ceiling()
        fanout = await self.fanout()
        await self.start_worker()
        await self.warm_up()
        e2e = await self.e2e()
        recipients = await self.throughput(
            f"recipients: {plan.recipients_per_row}/row", plan.recipient_rows, plan.recipients_per_row
        )
        latency = await self.latency()
        schedule_errors = await self.scheduled()
        backlog = await self.backlog()
        heavy = await self.throughput(f"heavy: 1 row x {plan.heavy_recipients}", 1, plan.heavy_recipients)
        assert self.rss is not None
        self.rss.sample()
        rss_peak_mb = self.rss.peak_mb  # the worker below is another process, for a light phase
        # The same kind of row on Novu's free-tier-like budget: a worker whose NOVU_RATE_LIMIT_RPS is LIMITED_RPS.
        await self._restart_worker(novu_rate_limit_rps=LIMITED_RPS)
        limited = await self.throughput(
            f"heavy on {LIMITED_RPS:g} tokens/s: 1 row x {plan.limited_recipients}", 1, plan.limited_recipients
        )
        wake_latency, wake_runs = await self.wakeups()
        killed = await self.listener_killed()
        if self.postgres_pid is not None:  # two enterprises: only on the bench's own database
            self.figures.update(await self.noisy())
        else:
            log.warning("bench: the noisy-neighbour phase needs the bench's own database (DATABASE_URL is set)")
        rss_backlog_mb = await self.backlog_rss()  # last: it leaves a worker stopped mid-backlog
        return BenchResult(
            ceiling_per_s=ceiling,
            e2e_per_s=e2e,
            throughput_ratio=e2e / ceiling,
            recipients_per_s=recipients,
            latency_p50_s=percentile(latency, 50),
            latency_p99_s=percentile(latency, 99),
            schedule_error_p50_s=percentile(schedule_errors, 50),
            schedule_error_p99_s=percentile(schedule_errors, 99),
            backlog_per_s=backlog,
            rss_mb=rss_peak_mb,
            heavy_recipients_per_s=heavy,
            limited_send_s=plan.limited_recipients / limited,
            limited_floor_s=plan.limited_recipients / LIMITED_RPS,
            wakeup_latency_p50_s=percentile(wake_latency, 50),
            wakeup_latency_p99_s=percentile(wake_latency, 99),
            wakeup_runs_per_1000_commits=wake_runs,
            fanout_per_s=fanout,
            fanout_ratio=e2e / fanout,
            listener_killed_latency_p50_s=percentile(killed, 50),
            listener_killed_latency_p99_s=percentile(killed, 99),
            rss_backlog_mb=rss_backlog_mb,
            **self.figures,
        )

    async def run_only_noisy(
        self, stack_pids: Sequence[int] = (), *, temporal_pid: int | None = None, postgres_pid: int | None = None
    ) -> BenchResult:
        """`xnovu bench --only noisy`: the noisy-neighbour phase alone; the other figures stay 0."""
        self.temporal_pid, self.postgres_pid = temporal_pid, postgres_pid
        if postgres_pid is None:
            raise XnovuError("the noisy-neighbour phase needs the bench's own database: unset DATABASE_URL")
        self.host_load = HostLoad([os.getpid(), *stack_pids])
        self._load_task = asyncio.create_task(self.host_load.run(), name="bench-host-load")
        figures = await self.noisy(restore=False)
        zero = {f: 0.0 for f in BenchResult.__dataclass_fields__ if not f.startswith("noisy_")}
        return BenchResult(**{**zero, **figures})

    async def run_only_trickle(
        self, stack_pids: Sequence[int] = (), *, temporal_pid: int | None = None, postgres_pid: int | None = None
    ) -> BenchResult:
        """`xnovu bench --only trickle`: the trickle phase alone; the other figures stay 0."""
        self.temporal_pid, self.postgres_pid = temporal_pid, postgres_pid
        self.host_load = HostLoad([os.getpid(), *stack_pids])
        self._load_task = asyncio.create_task(self.host_load.run(), name="bench-host-load")
        figures = await self.trickle()
        zero = {f: 0.0 for f in BenchResult.__dataclass_fields__ if not f.startswith("trickle_")}
        return BenchResult(**{**zero, **figures})

    async def _restart_worker(self, **overrides: Any) -> None:
        """Stop the xnovu worker (gracefully) and start one with other settings."""
        await self._stop_worker()
        await self.start_worker(**overrides)

    async def _stop_worker(self) -> None:
        """Stop sampling the worker's memory, then the worker itself (gracefully)."""
        assert self.worker is not None
        if self._rss_task is not None:
            self._rss_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._rss_task
        await asyncio.to_thread(self.worker.stop)


async def run_bench(
    settings: Settings,
    *,
    quick: bool,
    as_json: bool,
    console: Console,
    only: str | None = None,
    noisy: NoisyPlan | None = None,
) -> BenchResult:
    """Bring up the stack, run every phase (or `only` one: "noisy"), print the table (or only the JSON object) and
    stop everything. `noisy` replaces the plan's noisy-neighbour sizes.

    Progress goes to stderr so that `--json` leaves stdout to the one JSON object. On failure the temporary folder
    with every log is kept and named in the error; after a clean run (or Ctrl-C) it is removed.
    """
    plan = QUICK if quick else FULL
    if noisy is not None:
        plan = replace(plan, noisy=noisy)
    if only not in (None, "noisy", "trickle"):
        raise XnovuError(f"--only {only}: the phases that run alone are noisy and trickle")
    base = Path(tempfile.mkdtemp(prefix="xnovu-bench-"))
    namespace = f"{settings.temporal_namespace}-bench"
    metrics_port = free_port()
    stack = LocalStack(settings, base, namespace=namespace, temporal_metrics_port=metrics_port)
    bench: Bench | None = None
    keep = False
    progress = Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
    )
    try:
        with progress:
            starting = progress.add_task("starting Postgres, Temporal, emulator", total=1)
            stack_settings = await asyncio.to_thread(stack.start)
            stack_settings = stack_settings.model_copy(update={"temporal_namespace": namespace})
            bench = Bench(stack_settings, base, plan, progress)
            if stack.temporal is not None:
                bench.temporal_metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
            await bench.setup()
            progress.update(starting, completed=1)
            temporal = stack.temporal.process if stack.temporal is not None else None
            runner = {"noisy": bench.run_only_noisy, "trickle": bench.run_only_trickle}.get(only or "", bench.run)
            result = await runner(
                stack.detached_pids(),
                temporal_pid=temporal.pid if temporal is not None else None,
                postgres_pid=next(iter(stack.detached_pids()), None),
            )
            assert bench.host_load is not None
            foreign = bench.host_load.foreign_percent()
    except Exception as exc:
        keep = True
        if isinstance(exc, XnovuError):
            raise XnovuError(f"{exc} (bench files kept in {base})") from None
        raise
    finally:
        if bench is not None:
            await bench.close(delete_schedules=stack.temporal is None)
        await asyncio.to_thread(stack.stop)
        if not keep:
            shutil.rmtree(base, ignore_errors=True)
    if foreign > BUSY_HOST_PERCENT:
        progress.console.print(
            f"[yellow]warning:[/yellow] other processes used {foreign:.0f} % of this machine's CPU during the run; "
            "the figures are noisier than usual"
        )
    if as_json:
        console.print_json(result_json(result, only=only))
    else:
        console.print(results_table(result, plan, quick, foreign, only=only))
    return result
