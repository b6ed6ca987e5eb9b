"""`xnovu doctor`: is every dependency reachable and configured (and do the worker and the database agree on
wake-ups)? Each failed check says how to fix it."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest
from temporalio.client import Client
from temporalio.service import RPCError

from xnovu.config import Settings
from xnovu.db.repository import connect
from xnovu.errors import XnovuError
from xnovu.temporal.connection import connect_temporal
from xnovu.temporal.fairness import NORMAL, OTHER, probe_fairness
from xnovu.temporal.stranded import HEAL_COMMAND, find_stranded
from xnovu.worker.composition import novu_client
from xnovu.worker.wakeup import off_reason

#: The doctor's option that runs the fairness probe (off by default: it starts workflows).
PROBE_FLAG = "--fairness-probe"


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


async def _database(settings: Settings) -> list[Check]:
    try:
        repo = await asyncio.wait_for(connect(settings), 15)
    except (XnovuError, TimeoutError) as exc:
        return [
            Check("postgres", False, str(exc) or "timed out; check DATABASE_URL"),
            Check("schema", False, "skipped"),
            Check("wakeups", False, "skipped"),
        ]
    try:
        present = await repo.schema_present()
        switch = await repo.wakeup_switch() if present.get("notifications") else None
    finally:
        await repo.close()
    missing = [name for name, ok in present.items() if not ok]
    return [
        Check("postgres", True, "reachable"),
        Check(
            "schema", not missing, "present" if not missing else f"missing {', '.join(missing)}: run `xnovu db migrate`"
        ),
        _wakeups(settings, switch),
    ]


def _wakeups(settings: Settings, switch: dict[str, Any] | None) -> Check:
    """Do this worker's settings and the database's switch (migration 0007) agree on wake-ups?"""
    database_on = switch is None or bool(switch["notify"])
    reason = off_reason(settings)
    if reason is None and not database_on:
        return Check(
            "wakeups",
            False,
            "enabled in the worker but switched off in the database: new notifications wait for the poll interval; "
            "run `xnovu db wakeups on` (or set WAKEUP_ENABLED=false)",
        )
    if reason is None:
        return Check("wakeups", True, "on: the worker listens and the database notifies")
    if database_on:
        return Check(
            "wakeups",
            True,
            f"off in the worker ({reason}); the database still notifies at every insert: "
            "if no worker listens, `xnovu db wakeups off` spares commits the notify lock",
        )
    return Check("wakeups", True, f"off in the worker ({reason}) and in the database")


async def _fairness(client: Client, probe: bool) -> Check:
    """One line: does the server dispatch the children by their fairness key (the enterprise)? Measured, since no
    API tells (xnovu/temporal/fairness.py); xnovu's own claims and token budget share fairly either way."""
    fix = (
        "set matching.enableFairness=true in the server's dynamic config (Temporal Cloud: the namespace's Fairness "
        "setting) so the task queue shares out children by enterprise too"
    )
    if not probe:
        return Check(
            "temporal-fairness",
            True,
            f"not probed: run `xnovu doctor {PROBE_FLAG}` to measure whether the server shares out children by "
            f"enterprise (starts {NORMAL + OTHER} probe workflows, billed as actions on Temporal Cloud)",
        )
    try:
        result = await asyncio.wait_for(probe_fairness(client), 60)
    except (RPCError, TimeoutError) as exc:
        return Check(
            "temporal-fairness", True, f"could not probe: {getattr(exc, 'message', None) or type(exc).__name__}"
        )
    how = f"server {result.server_version}, {NORMAL + OTHER} probe tasks"
    if result.state == "on":
        return Check("temporal-fairness", True, f"on: the task queue shares out children by enterprise ({how})")
    if result.state == "off":
        return Check("temporal-fairness", True, f"off: children queue oldest first within a priority ({how}); {fix}")
    again = f"run `xnovu doctor {PROBE_FLAG}` again, or check the server's config"
    return Check("temporal-fairness", True, f"unclear ({how}); {again}")


async def _temporal(settings: Settings, probe: bool = False) -> list[Check]:
    try:
        client = await connect_temporal(settings)
    except XnovuError as exc:
        return [
            Check("temporal", False, str(exc)),
            Check("namespace", False, "skipped"),
            Check("temporal-fairness", False, "skipped"),
            Check("schedule-runs", False, "skipped"),
        ]
    try:
        await client.workflow_service.describe_namespace(
            DescribeNamespaceRequest(namespace=settings.temporal_namespace)
        )
    except RPCError as exc:
        return [
            Check("temporal", True, f"reachable at {settings.temporal_address}"),
            Check("namespace", False, f"{settings.temporal_namespace!r}: {exc.message}; run `xnovu bootstrap`"),
            Check("temporal-fairness", False, "skipped"),
            Check("schedule-runs", False, "skipped"),
        ]
    return [
        Check("temporal", True, f"reachable at {settings.temporal_address}"),
        Check("namespace", True, settings.temporal_namespace),
        await _fairness(client, probe),
        await _schedule_runs(client),
    ]


async def _schedule_runs(client: Client) -> Check:
    """A run of a schedule stranded on a task queue no worker polls holds that schedule until its run timeout (after
    a rollback, README "Deploy"); named with the command that frees it."""
    try:
        stranded = await find_stranded(client)
    except RPCError as exc:
        return Check("schedule-runs", False, f"could not read the schedules' runs: {exc.message}")
    if not stranded:
        return Check("schedule-runs", True, "no run stranded on a task queue no worker polls")
    runs = "; ".join(r.describe() for r in stranded)
    return Check("schedule-runs", False, f"{runs}; run `{HEAL_COMMAND}` to terminate them")


async def _novu(settings: Settings) -> list[Check]:
    try:
        client = novu_client(settings)
    except XnovuError as exc:
        return [Check("novu", False, str(exc))]
    async with client:
        ok, message = await client.check_auth()
    return [Check("novu", ok, message)]


async def run_checks(settings: Settings, *, fairness_probe: bool = False) -> list[Check]:
    """All checks, concurrently; never raises for a failed dependency. `fairness_probe` (opt-in, `xnovu doctor
    --fairness-probe`): measure whether the Temporal server dispatches by fairness key (starts and terminates 120
    probe workflows on a queue of their own: each doctor run would otherwise cost Temporal Cloud actions)."""
    groups = await asyncio.gather(_database(settings), _temporal(settings, fairness_probe), _novu(settings))
    return [check for group in groups for check in group]
