"""`xnovu dev [--demo]`: the whole product on one machine, with nothing to install but the package.

Embedded Postgres (pgserver) unless DATABASE_URL is set, the Temporal dev server with its Web UI unless
TEMPORAL_ADDRESS is set, the Novu emulator unless NOVU_API_URL is set; then migrations and the worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from pydantic import SecretStr
from rich.console import Console
from rich.table import Table

from xnovu.config import Settings
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
from xnovu.devtools.stack import EmbeddedPostgres, TemporalDevServer, free_port, port_in_use, wait_for_port
from xnovu.errors import XnovuError
from xnovu.temporal.schedules import RULES_SYNC_ID, trigger_now
from xnovu.worker.manager import WorkerManager

log = logging.getLogger(__name__)

DEV_SECRET_KEY = "xnovu-dev-secret-key"
DEMO_WORKFLOW = "xnovu-demo"


class DevStack:
    """Starts what is not configured, stops it in reverse order."""

    def __init__(self, settings: Settings, state_dir: Path) -> None:
        self.base = settings
        self.state_dir = state_dir
        self.postgres: EmbeddedPostgres | None = None
        self.temporal: TemporalDevServer | None = None
        self.emulator: subprocess.Popen[bytes] | None = None
        self.settings = settings

    def start(self) -> Settings:
        s = self.base
        self.state_dir.mkdir(parents=True, exist_ok=True)
        update: dict[str, object] = {}
        if s.database_url is None:
            self.postgres = EmbeddedPostgres(self.state_dir / "pg")
            update["database_url"] = SecretStr(self.postgres.start())
        if "temporal_address" not in s.model_fields_set:
            if port_in_use(7233):
                raise XnovuError("port 7233 is in use (another Temporal?); stop it or set TEMPORAL_ADDRESS to use it")
            self.temporal = TemporalDevServer(
                self.state_dir / "temporal.db", 7233, 8233, s.temporal_namespace, self.state_dir / "temporal.log"
            ).start()
            update["temporal_address"] = self.temporal.address
        if "novu_api_url" not in s.model_fields_set:
            key = s.novu_secret_key.get_secret_value() if s.novu_secret_key else DEV_SECRET_KEY
            port = 8787 if not port_in_use(8787) else free_port()
            log_path = (self.state_dir / "emulator.log").open("ab")
            self.emulator = subprocess.Popen(
                [sys.executable, "-m", "xnovu", "emulator", "--port", str(port), "--secret-key", key],
                stdout=log_path,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
            wait_for_port("127.0.0.1", port, 30, self.emulator)
            update["novu_api_url"] = f"http://127.0.0.1:{port}"
            update["novu_secret_key"] = SecretStr(key)
        self.settings = s.model_copy(update=update)
        return self.settings

    def stop(self) -> None:
        if self.emulator is not None and self.emulator.poll() is None:
            self.emulator.send_signal(signal.SIGINT)
            try:
                self.emulator.wait(10)
            except subprocess.TimeoutExpired:
                self.emulator.kill()
        if self.temporal is not None:
            self.temporal.stop()
        if self.postgres is not None:
            self.postgres.close()


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
    stack = DevStack(settings, state_dir)
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
            + (" (emulator; deliveries at /emulator/events)" if stack.emulator else "")
        )
        console.print(f"  Health          : http://127.0.0.1:{s.worker_health_port}/health  /status  /metrics")
        console.print(
            f"  Postgres        : {'embedded in ' + str(state_dir / 'pg') if stack.postgres else 'DATABASE_URL'}"
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
