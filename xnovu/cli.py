"""`xnovu` command line (README "Command line"): thin typer commands over the library; each runs one `asyncio.run`.

Every failure is one readable line on stderr and exit code 1; `--json` gives machine-readable output.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from xnovu.config import Settings, load_settings
from xnovu.core.priority import SORT_ORDER_MAX, SORT_ORDER_MIN, sort_order_in_range
from xnovu.errors import XnovuError
from xnovu.logs import configure_logging
from xnovu.tracing import Tracing

T = TypeVar("T")

app = typer.Typer(
    help="Durable notification delivery from a Postgres outbox to Novu, on Temporal.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,  # tracebacks with locals could show secrets (I6)
)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
worker_app = typer.Typer(help="The worker process.", no_args_is_help=True)
schedules_app = typer.Typer(
    help="The poll, rules-sync and retention schedules (and rule schedules).", no_args_is_help=True
)
workflow_app = typer.Typer(help="Inspect a Temporal workflow.", no_args_is_help=True)
dlq_app = typer.Typer(help="Dead-lettered notifications.", no_args_is_help=True)
rules_app = typer.Typer(help="Notification rules on a CRON (one Temporal Schedule per rule).", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(worker_app, name="worker")
app.add_typer(schedules_app, name="schedules")
app.add_typer(workflow_app, name="workflow")
app.add_typer(dlq_app, name="dlq")
app.add_typer(rules_app, name="rules")

# soft_wrap: a line is never broken at the terminal width (or at 80 columns when piped): one error, one line.
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

JSON_OPT = typer.Option(False, "--json", help="Print JSON instead of a table.")


def settings() -> Settings:
    """Settings built once per command from the environment and `.env`; logging configured from them."""
    s = load_settings()
    configure_logging(s.worker_log_level, s.worker_log_format, s.secret_values())
    return s


#: What `xnovu dev` and `xnovu bench` need beyond the worker's dependencies: the local stack's packages, the
#: pyproject.toml extra `embedded` (`pip install 'xnovu[embedded]'`; scripts/bootstrap-venv.sh installs it).
EMBEDDED_MODULES = ("pgserver", "psutil")


def require_embedded(command: str) -> None:
    """Stop with one line saying what to install when the local stack's packages are missing (a lean install)."""
    import importlib.util

    def missing(module: str) -> bool:
        try:
            return importlib.util.find_spec(module) is None
        except (ImportError, ValueError):
            return True

    absent = [m for m in EMBEDDED_MODULES if missing(m)]
    if absent:
        raise XnovuError(
            f"`xnovu {command}` needs the local stack, which this install lacks ({', '.join(absent)}): "
            "pip install 'xnovu[embedded]'"
        )


def tracing() -> Tracing:
    """The one decision whether traces are exported: OTEL_* from the environment (or `.env`); off when unset."""
    from xnovu.tracing import load_otel_dotenv, tracing_from_environ

    load_otel_dotenv()
    return tracing_from_environ()


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def to_jsonable(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return to_jsonable(asdict(value))
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if hasattr(value, "value") and not isinstance(value, int | str | float | bool):
        return value.value
    return value


def print_json(value: Any) -> None:
    out.print_json(json.dumps(to_jsonable(value), default=str))


# -- dev -------------------------------------------------------------------------------------------------------


@app.command()
def dev(
    demo: bool = typer.Option(False, "--demo", help="Insert a demo workflow and notifications and show them SENT."),
    state_dir: Path = typer.Option(Path(".xnovu"), help="Where embedded Postgres and Temporal keep their data."),
) -> None:
    """Run everything locally: embedded Postgres, Temporal dev server + Web UI, Novu emulator and the worker."""
    require_embedded("dev")
    from xnovu.devtools.dev import run_dev

    s = settings()
    run(run_dev(s, state_dir=state_dir, demo=demo, console=out))


# -- db ----------------------------------------------------------------------------------------------------------


@db_app.command("migrate")
def db_migrate() -> None:
    """Create what is missing of the schema (safe on an existing Supabase database, safe to run twice)."""
    from xnovu.db import connect

    async def go() -> list[str]:
        repo = await connect(settings())
        try:
            return await repo.migrate()
        finally:
            await repo.close()

    applied = run(go())
    out.print(f"applied: {', '.join(applied)}" if applied else "schema up to date")


WAKEUP_ACTIONS = ("on", "off", "status")


@db_app.command("wakeups")
def db_wakeups(
    action: str = typer.Argument("status", help="on | off | status"),
    as_json: bool = JSON_OPT,
) -> None:
    """Switch the wake-up triggers' pg_notify in the database: off where no worker listens (behind a transaction
    pooler, WAKEUP_ENABLED=false), so commits skip Postgres' global notify lock; workers then poll at intervals."""
    if action not in WAKEUP_ACTIONS:
        raise XnovuError(f"unknown action {action!r}: use on, off or status")
    if action == "status":
        state = _with_repo(lambda r: r.wakeup_switch())
    else:
        state = _with_repo(lambda r: r.set_wakeup_switch(action == "on"))
    if as_json:
        print_json(state)
        return
    if state is None:
        out.print("wake-up notifications: on (no switch before migration 0007: run `xnovu db migrate`)")
        return
    changed = f" (changed {_when(state['changed_at'])} by {state['changed_by']})" if state["changed_at"] else ""
    out.print(f"wake-up notifications: {'on' if state['notify'] else 'off'}{changed}")
    if not state["notify"]:
        out.print("workers that listen wait for their poll interval; `xnovu db wakeups on` switches them back on")


@db_app.command("prune")
def db_prune(
    dry_run: bool = typer.Option(False, "--dry-run", help="Count what would be removed; remove nothing."),
    notifications: bool = typer.Option(
        False,
        "--notifications",
        help="Also delete the notifications themselves that ended more than RETENTION_NOTIFICATION_DAYS (else "
        "RETENTION_DAYS) ago.",
    ),
    as_json: bool = JSON_OPT,
) -> None:
    """Remove xnovu's own records (delivery ledger, rule fires, spent budget rows) of notifications that ended more
    than RETENTION_DAYS ago, in short batches while delivery goes on (docs/retention.md); what the xnovu-retention
    schedule does every hour."""
    from xnovu.db.retention import Pruner, RetentionPolicy

    s = settings()
    policy = RetentionPolicy.from_settings(s, notifications=notifications)

    async def go(repo: Repository) -> Any:
        pruner = Pruner(repo.pool, policy)
        return await (pruner.preview() if dry_run else pruner.run("cli"))

    result = _with_repo(go)
    if as_json:
        print_json(result.as_dict())
        return
    verb = "would remove" if dry_run else "removed"
    also = ""
    if result.notification_cutoff is not None:
        also = f"; notifications that ended before {_when(result.notification_cutoff)}"
    out.print(f"{verb} the records of notifications that ended before {_when(result.cutoff)}{also}:")
    table = Table("table", "rows")
    table.add_row("ent_notification_delivery (ledger)", str(result.deliveries))
    table.add_row("xnovu_rule_fire", str(result.rule_fires))
    table.add_row("xnovu_rate_budget", str(result.budget_rows))
    table.add_row("xnovu_prune_run", str(result.prune_runs))
    if result.notification_cutoff is not None:
        table.add_row("ent_notification", str(result.notifications))
    out.print(table)
    if not dry_run:
        out.print(f"in {result.batches} batches, the longest {result.longest_batch_ms} ms")


PRIORITY_ORDERS = ("higher-first", "lower-first")

if TYPE_CHECKING:
    from xnovu.db.repository import Repository


@db_app.command("priority")
def db_priority(
    action: str = typer.Argument("show", help="show | set | recompute"),
    order: str | None = typer.Option(None, "--order", help="higher-first | lower-first: which sort_order is urgent"),
    normal: int | None = typer.Option(None, "--normal", help="the sort_order that means normal urgency"),
    as_json: bool = JSON_OPT,
) -> None:
    """How typ_notification_priority.sort_order maps to urgency (docs/priority.md): which way it points and which
    value is normal. `set` changes it and recomputes the urgency of every queued row that names a priority;
    `recompute` finishes now what the workers recompute in the background after a sort_order changed."""
    if action not in ("show", "set", "recompute"):
        raise XnovuError(f"unknown action {action!r}: use show, set or recompute")
    if order is not None and order not in PRIORITY_ORDERS:
        raise XnovuError(f"unknown order {order!r}: use higher-first or lower-first")
    if normal is not None and not sort_order_in_range(normal):
        raise XnovuError(
            f"--normal {normal} is out of range: a sort_order is an integer from {SORT_ORDER_MIN} to {SORT_ORDER_MAX}"
        )
    if action != "set" and (order is not None or normal is not None):
        raise XnovuError("--order and --normal go with `set`")
    changed: int | None = None
    if action == "show":
        state = _with_repo(lambda r: r.priority_order())
    elif action == "recompute":

        async def recompute(repo: Repository) -> tuple[dict[str, Any] | None, int]:
            if await repo.priority_order() is None:
                return None, 0
            changed = await repo.recompute_priorities()
            return await repo.priority_order(), changed

        state, changed = _with_repo(recompute)
    else:
        if order is None and normal is None:
            raise XnovuError("`set` needs --order and/or --normal")

        async def change(repo: Repository) -> tuple[dict[str, Any], int]:
            current = await repo.priority_order() or {"higher_first": True, "normal_sort_order": 0}
            higher = current["higher_first"] if order is None else order == "higher-first"
            base = current["normal_sort_order"] if normal is None else normal
            state, changed = await repo.set_priority_order(higher_first=higher, normal=base)
            return {**state, **(await repo.priority_order() or {})}, changed

        state, changed = _with_repo(change)
    if state is None:
        raise XnovuError("no priority order before migration 0011: run `xnovu db migrate`")
    direction = "higher-first" if state["higher_first"] else "lower-first"
    if as_json:
        print_json({**state, "order": direction, **({"recomputed": changed} if changed is not None else {})})
        return
    out.print(
        f"priority: {direction}, normal sort_order {state['normal_sort_order']} "
        f"({state['priorities']} priorities; changed {_when(state['changed_at'])} by {state['changed_by']})"
    )
    if changed is not None:
        out.print(f"recomputed the urgency of {changed} queued rows")
    pending = int(state.get("pending") or 0)
    if pending:
        out.print(
            f"{pending} {'priority' if pending == 1 else 'priorities'} waiting for {'its' if pending == 1 else 'their'}"
            " queued rows' urgency to be recomputed (workers do it in the background; `xnovu db priority recompute`"
            " does it now)"
        )


# -- bootstrap ------------------------------------------------------------------------------------------------


@app.command()
def bootstrap() -> None:
    """Create the Temporal namespace, search attributes and poll schedules (idempotent)."""
    from xnovu.temporal.bootstrap import bootstrap as do_bootstrap
    from xnovu.temporal.connection import connect_temporal

    async def go() -> Any:
        s = settings()
        client = await connect_temporal(s)
        return await do_bootstrap(client, s)

    report = run(go())
    out.print(f"namespace: {report.namespace}")
    out.print(f"search attributes added: {', '.join(report.search_attributes) or 'none'}")
    weights = report.fairness_weights
    shown = weights if isinstance(weights, str) else ", ".join(f"{k}={w:g}" for k, w in weights.items()) or "none"
    out.print(f"fairness weights on the task queue: {shown}")
    for sid, what in report.schedules.items():
        out.print(f"schedule {sid}: {what}")
    for stranded in report.stranded_runs:
        out.print(f"terminated a stranded run: {stranded}")


# -- worker ------------------------------------------------------------------------------------------------------


@worker_app.command("start")
def worker_start(
    detach: bool = typer.Option(False, "--detach", help="Run in the background; pid in WORKER_PID_FILE."),
) -> None:
    """Start the worker (foreground by default, container-friendly)."""
    from xnovu.worker import process

    s = settings()
    if detach:
        pid = process.start_detached(s)
        out.print(f"worker started in the background, pid {pid} (log: {process.log_file(s)})")
        return
    traces = tracing()
    try:
        run(process.run_foreground(s, traces))
    finally:
        traces.shutdown()


@worker_app.command("stop")
def worker_stop(timeout: float = typer.Option(60.0, help="Seconds to wait for a graceful exit.")) -> None:
    """Stop a detached worker with SIGTERM and wait for it to exit."""
    from xnovu.worker import process

    pid = process.stop_detached(settings(), timeout)
    out.print(f"worker {pid} stopped" if pid else "no worker was running")


@worker_app.command("restart")
def worker_restart(timeout: float = typer.Option(60.0, help="Seconds to wait for the old worker to exit.")) -> None:
    """Stop the detached worker (if any) and start a new one in the background."""
    from xnovu.worker import process

    s = settings()
    process.stop_detached(s, timeout)
    pid = process.start_detached(s)
    out.print(f"worker restarted, pid {pid}")


@worker_app.command("status")
def worker_status(as_json: bool = JSON_OPT) -> None:
    """Is the detached worker running? pid, uptime and health."""
    from xnovu.worker import process

    info = process.status(settings())
    if as_json:
        print_json(info)
    else:
        if not info["running"]:
            out.print("worker: not running")
        else:
            out.print(f"worker: running, pid {info['pid']}, up {info['uptime_s']:.0f} s, health: {info['health']}")
    if not info["running"]:
        raise typer.Exit(1)


@worker_app.command("health")
def worker_health(as_json: bool = JSON_OPT) -> None:
    """Query the worker's /health and /status; exit 1 when unhealthy."""
    from xnovu.worker import process

    s = settings()
    healthy, health, status = process.fetch_health(s)
    if as_json:
        print_json({"health": health, "status": status})
    else:
        colour = "green" if healthy else "red"
        out.print(f"[{colour}]{health.get('status', 'unreachable')}[/{colour}] {health.get('reason', '')}")
        if status:
            table = Table("field", "value")
            keys = ("version", "uptime_s", "namespace", "task_queue", "counts", "dead_lettered", "last_poll")
            for key in (*keys, "novu_token_budget", "tracing"):
                if key in status:
                    table.add_row(key, json.dumps(status[key]) if not isinstance(status[key], str) else status[key])
            for sched in status.get("schedules", []) if isinstance(status.get("schedules"), list) else []:
                table.add_row(sched["id"], "paused" if sched["paused"] else "active")
            wake = status.get("wakeup")
            if isinstance(wake, dict):
                reason = f" ({wake['reason']})" if wake.get("reason") else ""
                table.add_row("wakeup", f"{wake.get('state')}{reason}, {wake.get('wakeups_sent', 0)} sent")
            last = status.get("last_prune")
            if isinstance(last, dict):
                ended = "running"
                if last.get("finished_at"):
                    ended = last.get("error") or f"finished {last['finished_at']}"
                table.add_row("last prune", f"{last['rows']} rows, started {last['started_at']}, {ended}")
            fleet = status.get("fleet")
            if isinstance(fleet, dict) and "workers" in fleet:
                unseen = f", {fleet['unseen']} unseen" if fleet.get("unseen") else ""
                table.add_row(
                    "fleet",
                    f"{fleet['workers']} workers, {fleet['workflow_slots']} workflow slots{unseen}: "
                    f"{fleet['rows_window']} rows in flight per class at most",
                )
            due = status.get("due")
            if isinstance(due, dict) and "by_urgency" in due:
                capped = " (oldest rows sampled)" if due.get("capped") else ""
                for label, groups in (
                    ("due by urgency", due["by_urgency"]),
                    ("due by enterprise", due["by_enterprise"]),
                ):
                    shown = ", ".join(f"{k}: {v['due']} oldest {v['oldest_s']:.0f} s" for k, v in groups.items())
                    table.add_row(label, (shown or "nothing due") + capped)
            out.print(table)
    if not healthy:
        raise typer.Exit(1)


# -- schedules --------------------------------------------------------------------------------------------------


def _kinds(name: str | None, all_: bool) -> list[Any]:
    from xnovu.temporal.schedules import SYSTEM_SCHEDULES, parse_schedule

    if all_:
        return list(SYSTEM_SCHEDULES)
    if name is None:
        raise XnovuError("name a schedule (new, failed, scheduled, rules-sync, retention, xnovu-rule-ID) or pass --all")
    return [parse_schedule(name)]


def _with_client(fn: Callable[[Any], Awaitable[T]]) -> T:
    from xnovu.temporal.connection import connect_temporal

    async def go() -> T:
        return await fn(await connect_temporal(settings()))

    return run(go())


@schedules_app.command("list")
def schedules_list(as_json: bool = JSON_OPT) -> None:
    """State, interval, next/last run and note of each schedule."""
    from xnovu.temporal.schedules import describe_schedules

    infos = _with_client(describe_schedules)
    if as_json:
        print_json([i.as_dict() for i in infos])
        return
    if not infos:
        out.print("no schedules yet: run `xnovu bootstrap` (or start a worker)")
        return
    table = Table("schedule", "state", "every", "next run", "last run", "note")
    for i in infos:
        table.add_row(
            i.id,
            "[yellow]paused[/yellow]" if i.paused else "[green]active[/green]",
            f"{i.interval_s:g} s",
            i.next_run.isoformat(timespec="seconds") if i.next_run else "-",
            i.last_run.isoformat(timespec="seconds") if i.last_run else "-",
            i.note,
        )
    out.print(table)


@schedules_app.command("pause")
def schedules_pause(
    name: str | None = typer.Argument(None, help="new | failed | scheduled | rules-sync | retention | xnovu-rule-ID"),
    all_: bool = typer.Option(False, "--all", help="Pause the three polls, the rules sync and the retention."),
    note: str | None = typer.Option(None, help="Why (shown in the Web UI)."),
) -> None:
    """Pause polling: nothing new is claimed until resumed (running children finish)."""
    from xnovu.temporal.schedules import set_paused

    kinds = _kinds(name, all_)
    done = _with_client(lambda c: set_paused(c, kinds, True, note))
    out.print(f"paused: {', '.join(done)}")


@schedules_app.command("resume")
def schedules_resume(
    name: str | None = typer.Argument(None, help="new | failed | scheduled | rules-sync | retention | xnovu-rule-ID"),
    all_: bool = typer.Option(False, "--all", help="Resume the three polls, the rules sync and the retention."),
) -> None:
    """Resume polling; the backlog is drained on the next tick."""
    from xnovu.temporal.schedules import set_paused

    kinds = _kinds(name, all_)
    done = _with_client(lambda c: set_paused(c, kinds, False))
    out.print(f"resumed: {', '.join(done)}")


@schedules_app.command("trigger")
def schedules_trigger(
    name: str = typer.Argument(..., help="new | failed | scheduled | rules-sync | retention | xnovu-rule-ID"),
) -> None:
    """Run one poll (or rules sync, prune, rule fire) now."""
    from xnovu.temporal.schedules import any_schedule_id, trigger_now

    kind = _kinds(name, False)[0]
    _with_client(lambda c: trigger_now(c, kind))
    out.print(f"triggered {any_schedule_id(kind)}")


@schedules_app.command("heal")
def schedules_heal(
    dry_run: bool = typer.Option(False, "--dry-run", help="Only list the runs; terminate nothing."),
    as_json: bool = JSON_OPT,
) -> None:
    """Terminate runs of the schedules left on a task queue no worker polls (after a rollback, README "Deploy").

    Such a run holds its schedule until its run timeout (10 minutes for a poll). A run is terminated only when its
    schedule now starts runs on another queue, its workflow task has waited 30 s, and no worker polled that queue
    since; other runs on a queue their schedule left are listed with why they were left."""
    from xnovu.temporal.stranded import HealReport, find_off_target, heal_stranded

    async def go(client: Any) -> HealReport:
        if dry_run:
            runs = await find_off_target(client)
            return HealReport([], runs)
        return await heal_stranded(client)

    report = _with_client(go)
    if as_json:
        print_json(
            [
                {
                    "workflow_id": r.workflow_id,
                    "run_id": r.run_id,
                    "schedule_id": r.schedule_id,
                    "task_queue": r.task_queue,
                    "target_queue": r.target_queue,
                    "stranded": r.stranded,
                    "terminated": r in report.terminated,
                }
                for r in (*report.terminated, *report.left)
            ]
        )
        return
    for r in report.terminated:
        out.print(f"terminated: {r.describe()}")
    for r in report.left:
        out.print(f"{'stranded (dry run)' if r.stranded else 'left'}: {r.describe()}")
    if not report.terminated and not report.left:
        out.print("no stranded run: every open run of the schedules is on the task queue its schedule targets")


# -- notifications ----------------------------------------------------------------------------------------------


def _results_table(results: list[Any]) -> Table:
    table = Table("id", "outcome", "status", "recipients", "reason")
    for r in results:
        table.add_row(
            str(r.notification_id),
            r.outcome.value,
            r.notification_status or "-",
            f"{r.success_count}/{r.total_recipients}",
            r.reason or "",
        )
    return table


@app.command()
def trigger(
    ids: list[int] = typer.Argument(..., help="Notification ids."),
    wait: bool = typer.Option(False, "--wait", help="Wait for each attempt's result."),
    as_json: bool = JSON_OPT,
) -> None:
    """Trigger notifications now through Temporal (same workflow ids as the polls: never a double send)."""
    from xnovu.api import NotificationClient

    s = settings()
    traces = tracing()

    async def go() -> tuple[list[str], list[Any]]:
        async with NotificationClient(s, tracing=traces) as nc:
            if not wait:
                return [(await nc.start_notification(i)).id for i in ids], []
            # One start per id, then its result: starting again would use up the next attempt.
            done = [await nc.trigger_and_wait(i) for i in ids]
            return [wid for wid, _ in done], [result for _, result in done]

    try:
        wids, results = run(go())
    finally:
        traces.shutdown()  # flush before the CLI leaves without finalisation
    if as_json:
        print_json({"workflow_ids": wids, "results": results})
    elif results:
        out.print(_results_table(results))
    else:
        for wid in wids:
            out.print(f"started {wid}")
    from xnovu.core.models import Outcome

    failed = [r for r in results if r.outcome not in (Outcome.SENT, Outcome.SKIPPED)]
    if failed:
        raise XnovuError(f"{len(failed)} of {len(results)} notifications were not sent (see the reasons above)")


@workflow_app.command("status")
def workflow_status(workflow_id: str, as_json: bool = JSON_OPT) -> None:
    """Status of a workflow (e.g. notification-42-a1)."""
    from xnovu.api import NotificationClient

    async def go() -> dict[str, Any]:
        async with NotificationClient(settings()) as nc:
            return await nc.get_workflow_status(workflow_id)

    info = run(go())
    if as_json:
        print_json(info)
    else:
        for k, v in info.items():
            out.print(f"{k}: {v}")


@workflow_app.command("result")
def workflow_result(workflow_id: str) -> None:
    """Result of a workflow (waits if it is still running)."""
    from xnovu.api import NotificationClient

    async def go() -> Any:
        async with NotificationClient(settings()) as nc:
            return await nc.get_workflow_result(workflow_id)

    print_json(run(go()))


@dlq_app.command("list")
def dlq_list(limit: int = typer.Option(100, min=1, max=10_000), as_json: bool = JSON_OPT) -> None:
    """Dead-lettered notifications, oldest first."""
    rows = _with_repo(lambda r: r.dlq_list(limit))
    if as_json:
        print_json(rows)
        return
    table = Table("id", "name", "attempts", "dead-lettered at", "error", "ledger pruned at")
    for row in rows:
        table.add_row(
            str(row["id"]),
            row["name"],
            str(row["attempts"]),
            row["dead_lettered_at"].isoformat(),
            row["error"] or "",
            _when(row.get("ledger_pruned_at")),
        )
    out.print(table if rows else "the dead-letter queue is empty")


@dlq_app.command("requeue")
def dlq_requeue(
    ids: list[int] = typer.Argument(..., help="Notification ids."),
    force: bool = typer.Option(
        False,
        "--force",
        help="Requeue a row whose delivery ledger was pruned too: it is sent again to every recipient, including "
        "those Novu already acknowledged.",
    ),
) -> None:
    """Back to PENDING with fresh attempts; recipients Novu acknowledged are not sent again."""

    async def go(repo: Repository) -> tuple[list[int], dict[int, Any]]:
        done = await repo.dlq_requeue(ids, force=force)
        left = [i for i in ids if i not in set(done)]
        return done, (await repo.dlq_ledger_pruned(left) if left else {})

    done, pruned = _with_repo(go)
    missing = sorted(set(ids) - set(done) - set(pruned))
    out.print(f"requeued: {', '.join(map(str, done)) or 'none'}")
    if pruned:
        shown = ", ".join(f"{i} (pruned {_when(at)})" for i, at in sorted(pruned.items()))
        raise XnovuError(
            f"delivery ledger pruned (left unchanged): {shown}; a retry would send again to the recipients Novu "
            "already acknowledged: pass --force to requeue anyway"
            + (f"; not dead-lettered: {', '.join(map(str, missing))}" if missing else "")
        )
    if missing:
        raise XnovuError(f"not dead-lettered (left unchanged): {', '.join(map(str, missing))}")


@app.command()
def retract(
    notification_id: int = typer.Argument(..., help="Notification id."),
    reason: str = typer.Option(..., "--reason", help="Why (kept in retraction_reason)."),
) -> None:
    """Retract a notification that is not sent yet: it will never be sent (a waiting scheduled send is skipped)."""
    if not reason.strip():
        raise XnovuError("--reason must not be empty")
    if not _with_repo(lambda r: r.retract(notification_id, reason.strip())):
        raise XnovuError(f"notification {notification_id} does not exist or is already SENT/RETRACTED")
    out.print(f"notification {notification_id} retracted")


def _with_repo(fn: Callable[[Any], Awaitable[T]]) -> T:
    from xnovu.db import connect

    async def go() -> T:
        repo = await connect(settings())
        try:
            return await fn(repo)
        finally:
            await repo.close()

    return run(go())


# -- rules --------------------------------------------------------------------------------------------------------


def _with_rules(fn: Callable[[Any, Any, Settings], Awaitable[T]]) -> T:
    """Run `fn(client, rule_repository, settings)` with both connections open."""
    from xnovu.db import connect
    from xnovu.db.rules import RuleRepository
    from xnovu.temporal.connection import connect_temporal

    async def go() -> T:
        s = settings()
        repo = await connect(s)
        try:
            client = await connect_temporal(s)
            return await fn(client, RuleRepository(repo), s)
        finally:
            await repo.close()

    return run(go())


def _when(value: Any) -> str:
    return value.isoformat(timespec="seconds") if value else "-"


@rules_app.command("list")
def rules_list(as_json: bool = JSON_OPT) -> None:
    """Every rule: cron, timezone, schedule state, next and last fire, and what stops it from firing."""
    from xnovu.temporal.rules import list_rules

    infos = _with_rules(lambda c, r, s: list_rules(c, r))
    if as_json:
        print_json([i.as_dict() for i in infos])
        return
    if not infos:
        out.print("no rules in notify.ent_notification_rule")
        return
    table = Table("rule", "name", "cron (timezone)", "schedule", "next fire", "last fire")
    for i in infos:
        colour = {"active": "green", "paused": "yellow"}.get(i.state, "red" if i.trigger_type == "CRON" else "dim")
        table.add_row(
            str(i.id),
            escape(i.name),
            escape(f"{i.cron} ({i.timezone})" if i.cron else i.trigger_type),
            f"[{colour}]{i.state}[/{colour}]",
            _short_time(i.next_fire),
            _short_time(i.last_fire),
        )
    out.print(table)
    # Problems go below the table, one line each: a narrow terminal never cuts a reason short.
    for i in infos:
        if i.problem:
            out.print(f"rule {i.id} ({i.name}): {i.problem}", highlight=False, markup=False)


def _short_time(value: Any) -> str:
    return value.strftime("%Y-%m-%d %H:%MZ") if value else "-"


@rules_app.command("sync")
def rules_sync(as_json: bool = JSON_OPT) -> None:
    """Reconcile the rule Schedules with the rules table now (what xnovu-rules-sync does on every tick)."""
    from xnovu.temporal.rules import reconcile, rule_schedule_config

    report = _with_rules(lambda c, r, s: reconcile(c, r, rule_schedule_config(s)))
    if as_json:
        print_json(report)
        return
    for what in ("created", "updated", "paused", "resumed", "deleted", "unchanged"):
        ids = getattr(report, what)
        out.print(f"{what}: {', '.join(f'xnovu-rule-{i}' for i in ids) or 'none'}")
    for rule_id, problem in report.problems.items():
        out.print(f"rule {rule_id}: {problem}", highlight=False, markup=False)


@rules_app.command("trigger")
def rules_trigger(
    rule_id: int = typer.Argument(..., help="Rule id."),
    at: str | None = typer.Option(None, "--at", help="Fire for this time (ISO 8601) instead of the current minute."),
    as_json: bool = JSON_OPT,
) -> None:
    """Fire a rule now; a second fire for the same minute (or --at time) finds the first one's notification."""
    from datetime import datetime

    from xnovu.temporal.rules import trigger_rule

    when = None
    if at is not None:
        try:
            when = datetime.fromisoformat(at.replace("Z", "+00:00"))
        except ValueError:
            raise XnovuError(f"--at {at!r} is not an ISO 8601 time such as 2026-03-01T09:00:00Z") from None
    result = _with_rules(lambda c, r, s: trigger_rule(c, r, s.temporal_task_queue, rule_id, when))
    if as_json:
        print_json(result)
    elif result.notification_id is None:
        out.print(f"rule {rule_id} did not fire for {_when(result.scheduled_time)}: {result.reason}")
    else:
        made = "inserted" if result.created else "already inserted by an earlier fire:"
        out.print(f"rule {rule_id} fire {_when(result.scheduled_time)}: {made} notification {result.notification_id}")
    if result.notification_id is None:
        raise typer.Exit(1)


# -- doctor / emulator ---------------------------------------------------------------------------------------------


@app.command()
def doctor(
    as_json: bool = JSON_OPT,
    fairness_probe: bool = typer.Option(
        False,
        "--fairness-probe",
        help="Also measure whether Temporal dispatches by fairness key: starts 120 probe workflows on a queue of "
        "their own and terminates them (about 5 s; Temporal Cloud bills them as actions).",
    ),
) -> None:
    """Check Postgres, schema, Temporal, namespace and Novu (and, asked, Temporal fairness); say how to fix each."""
    from xnovu.worker.doctor import run_checks

    checks = run(run_checks(settings(), fairness_probe=fairness_probe))
    if as_json:
        print_json(checks)
    else:
        table = Table("check", "result", "detail")
        for c in checks:
            table.add_row(c.name, "[green]ok[/green]" if c.ok else "[red]FAIL[/red]", c.detail)
        out.print(table)
    if not all(c.ok for c in checks):
        raise typer.Exit(1)


@app.command()
def emulator(
    host: str = typer.Option("127.0.0.1", help="Interface to listen on."),
    port: int = typer.Option(8787, min=1, max=65535, help="Port to listen on."),
    secret_key: str | None = typer.Option(
        None, "--secret-key", help="Accepted API key (default: NOVU_SECRET_KEY, else any)."
    ),
) -> None:
    """Run the Novu API emulator (trigger, bulk, cancel + /emulator inspection and fault API)."""
    from xnovu.config import load_emulator_settings
    from xnovu.devtools.emulator import serve

    # Only the emulator's own settings: a worker variable that is empty or invalid does not concern it.
    s = load_emulator_settings()
    configure_logging(s.worker_log_level, s.worker_log_format, s.secret_values())
    key = secret_key or (s.novu_secret_key.get_secret_value() if s.novu_secret_key else None)
    serve(host, port, key)


@app.command()
def bench(
    quick: bool = typer.Option(False, "--quick", help="A smaller, faster run."),
    as_json: bool = JSON_OPT,
    only: str | None = typer.Option(
        None,
        "--only",
        help="Run one phase alone: noisy (the noisy-neighbour phase) or trickle (cost at each arrival rate); "
        "docs/performance.md.",
    ),
    noisy_rows: int | None = typer.Option(
        None, "--noisy-rows", min=1, help="Noisy neighbour: A's single-recipient rows (default 2000; --quick 500)."
    ),
    noisy_big_recipients: int | None = typer.Option(
        None, "--noisy-big-recipients", min=1, help="Noisy neighbour: recipients of A's big row (default 5000)."
    ),
    noisy_issue_sizes: bool = typer.Option(
        False,
        "--noisy-issue-sizes",
        help="Noisy neighbour at issue 17's sizes: 20 000 rows and one of 50 000 recipients (~20 min per run, 3 runs).",
    ),
) -> None:
    """Benchmark throughput, latency, scheduling precision and the noisy neighbour on the embedded stack."""
    require_embedded("bench")
    import dataclasses

    from xnovu.devtools.bench.phases import run_bench
    from xnovu.devtools.bench.plan import FULL, NOISY_ISSUE, QUICK

    noisy = NOISY_ISSUE if noisy_issue_sizes else (QUICK if quick else FULL).noisy
    if noisy_rows is not None:
        noisy = dataclasses.replace(noisy, a_rows=noisy_rows)
    if noisy_big_recipients is not None:
        noisy = dataclasses.replace(noisy, a_big_recipients=noisy_big_recipients)
    run(run_bench(settings(), quick=quick, as_json=as_json, console=out, only=only, noisy=noisy))


def main() -> None:
    """Run the CLI in this process and raise SystemExit with its code (importable, e.g. from tests)."""
    sys.exit(run_main())


def entrypoint() -> None:
    """The `xnovu` console script and `python -m xnovu`: run the CLI, then leave without finalisation."""
    _exit(run_main())


def run_main() -> int:
    """Run the CLI; one readable line and exit code 1 for every expected error. Returns the exit code."""
    code = 0
    try:
        app()
    except SystemExit as exc:  # typer/click end every run this way, success included
        if isinstance(exc.code, str):
            err.print(exc.code, highlight=False)
            code = 1
        else:
            code = exc.code or 0
    except XnovuError as exc:
        # Plain text, not markup: "pip install 'xnovu[embedded]'" must keep its brackets.
        err.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False)
        code = 1
    except KeyboardInterrupt:
        code = 130
    except Exception as exc:  # one line, not a traceback; XNOVU_DEBUG=1 shows the traceback
        if os.environ.get("XNOVU_DEBUG"):
            raise
        text = str(exc).splitlines()[0] if str(exc) else ""
        err.print(
            f"[red]error:[/red] {type(exc).__name__}: {escape(text)} (set XNOVU_DEBUG=1 for details)", highlight=False
        )
        code = 1
    return code


def _exit(code: int) -> None:
    """Flush and leave without interpreter finalisation.

    The Temporal client's native (Rust) threads can call back into Python while the interpreter finalises, which
    aborts an otherwise successful command ("PyGILState_Release ... finalizing", exit -6). Every command has
    finished its work and closed what it opened by now, so there is nothing left for finalisation to do.
    """
    import logging

    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)
