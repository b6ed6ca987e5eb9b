"""`xnovu dev [--demo]`: the whole product on one machine, with nothing to install but the package.

Embedded Postgres (pgserver) unless DATABASE_URL is set, the Temporal dev server with its Web UI unless
TEMPORAL_ADDRESS is set, the Novu emulator unless NOVU_API_URL is set; then migrations and the worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from rich.console import Console
from rich.table import Table

from xnovu.config import Settings, redact_url
from xnovu.core.models import PollKind
from xnovu.core.status import NotificationStatus
from xnovu.db.repository import (
    NewNotification,
    connect,
    insert_notifications,
    notification_states,
    upsert_workflow,
)
from xnovu.db.rules import NewRule, insert_rule
from xnovu.devtools.stack import LocalStack
from xnovu.temporal.schedules import RULES_SYNC_ID, trigger_now
from xnovu.worker.manager import WorkerManager

log = logging.getLogger(__name__)

DEV_SECRET_KEY = "xnovu-dev-secret-key"
#: The well-known ports of a local Temporal (and its Web UI) and of the emulator (README "Quick start").
DEV_TEMPORAL_PORT = 7233
DEV_TEMPORAL_UI_PORT = 8233
DEV_EMULATOR_PORT = 8787
DEMO_WORKFLOW = "xnovu-demo"


async def insert_demo(settings: Settings) -> list[int]:
    """A published workflow and a few notifications: three to send, one DRAFT (rejected), one scheduled."""
    repo = await connect(settings)
    try:
        wf = await upsert_workflow(repo, DEMO_WORKFLOW, name="xnovu demo", channels=("IN_APP", "EMAIL"))
        people = [str(uuid.uuid4()) for _ in range(3)]
        soon = datetime.now(UTC) + timedelta(seconds=15)
        rows = [
            NewNotification("Welcome", people, {"title": "Welcome to xnovu", "n": 1}),
            NewNotification("Order shipped", people[:1], {"orderId": "o-981"}),
            NewNotification("Weekly digest", people[1:], {"items": 3}),
            NewNotification("Draft (never sent)", people, {"draft": True}, publish_status="DRAFT"),
            NewNotification("Scheduled in 15 s", people[:1], {"scheduled": True}, scheduled_for=soon),
        ]
        return await insert_notifications(repo, wf, rows)
    finally:
        await repo.close()


async def insert_demo_rule(settings: Settings) -> int:
    """A CRON rule that fires every minute (README "Rules"); a second `dev --demo` reuses it."""
    repo = await connect(settings)
    try:
        wf = await upsert_workflow(repo, DEMO_WORKFLOW, name="xnovu demo", channels=("IN_APP", "EMAIL"))
        return await insert_rule(
            repo,
            NewRule(
                "Demo: every minute",
                wf,
                {"cron": "* * * * *", "timezone": "Europe/Berlin"},
                {"recipients": [str(uuid.uuid4())], "payload": {"title": "A rule fired", "source": "xnovu demo"}},
            ),
        )
    finally:
        await repo.close()


async def watch_demo(settings: Settings, ids: list[int], console: Console, timeout_s: float = 90.0) -> None:
    """Print the demo rows until every sendable one is SENT."""
    repo = await connect(settings)
    try:
        deadline = asyncio.get_running_loop().time() + timeout_s
        while True:
            states = await notification_states(repo, ids)
            pending = [
                s
                for s in states
                if s["status"] in (NotificationStatus.PENDING, NotificationStatus.PROCESSING)
                and "Draft" not in s["name"]
            ]
            if not pending or asyncio.get_running_loop().time() > deadline:
                break
            await asyncio.sleep(0.5)
        table = Table("id", "notification", "status", "attempts", "note", title="demo notifications")
        for s in states:
            table.add_row(str(s["id"]), s["name"], s["status"], str(s["attempts"]), s["error"] or "")
        console.print(table)
        sent = sum(s["status"] == NotificationStatus.SENT for s in states)
        console.print(f"[bold green]demo: {sent} notifications SENT[/bold green] (the DRAFT one is never sent: I1)")
    finally:
        await repo.close()


async def run_dev(settings: Settings, *, state_dir: Path, demo: bool, console: Console) -> None:
    stack = LocalStack(
        settings,
        state_dir,
        temporal_port=DEV_TEMPORAL_PORT,
        temporal_ui_port=DEV_TEMPORAL_UI_PORT,
        emulator_port=DEV_EMULATOR_PORT,
        default_secret_key=DEV_SECRET_KEY,
    )
    manager: WorkerManager | None = None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        s = await asyncio.to_thread(stack.start)
        repo = await connect(s)
        try:
            await repo.migrate()
        finally:
            await repo.close()
        manager = WorkerManager(s)
        await manager.start()
        console.print("[bold]xnovu dev is running[/bold]")
        if stack.temporal is not None:
            console.print(f"  Temporal Web UI : {stack.temporal.ui_url}/namespaces/{s.temporal_namespace}/workflows")
        console.print(f"  Temporal        : {s.temporal_address} (namespace {s.temporal_namespace})")
        console.print(
            f"  Novu API        : {s.novu_api_url}"
            + (" (emulator; deliveries at /emulator/events)" if stack.emulator_started else "")
        )
        console.print(f"  Health          : http://127.0.0.1:{s.worker_health_port}/health  /status  /metrics")
        console.print(
            f"  Postgres        : {'embedded in ' + str(state_dir / 'pg') if stack.postgres else 'DATABASE_URL'}"
        )
        if s.database_url is not None:
            # Other commands (`xnovu rules list`, `dlq list`, …) reach this stack through the same two variables.
            console.print(
                "  Other terminals : "
                f"DATABASE_URL='{redact_url(s.database_url.get_secret_value())}' "
                f"TEMPORAL_ADDRESS={s.temporal_address} xnovu …",
                soft_wrap=True,
            )
        if demo:
            ids = await insert_demo(s)
            assert manager.client is not None
            await trigger_now(manager.client, PollKind.NEW)
            await watch_demo(s, ids, console)
            rule_id = await insert_demo_rule(s)
            await trigger_now(manager.client, RULES_SYNC_ID)
            console.print(
                f"demo rule {rule_id} fires every minute (Schedule xnovu-rule-{rule_id}); see `xnovu rules list`"
            )
        console.print("Press Ctrl-C to stop.")
        waiter = asyncio.create_task(stop.wait())
        worker = asyncio.create_task(manager.wait())
        await asyncio.wait({waiter, worker}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        if manager is not None:
            with contextlib.suppress(Exception):
                await manager.stop()
        await asyncio.to_thread(stack.stop)
