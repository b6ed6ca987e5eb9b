"""Wake-ups: a commit that makes notifications PENDING triggers the poll schedule now, not at its next tick.

    INSERT ─▶ statement trigger (0005/0007) ┐
    UPDATE ─▶ row triggers WHEN <transition> (0007) ┴▶ pg_notify('xnovu_wakeup', 'new' | 'scheduled'), once per kind
                                                        and transaction
        ─▶ every worker's one LISTEN connection ─▶ WakeupListener (throttled per kind)
        ─▶ paused? (describe the schedule)
        ─▶ new rows, and the running chain lingers (its memo) or an urgent row is due: signal it `wake`
        ─▶ unless the lingering chain took the signal: ScheduleHandle.trigger(overlap=BUFFER_ONE)

The triggers notify only while the database's switch (`notify.xnovu_wakeup_switch`, migration 0007, `xnovu db
wakeups on|off`) is on; the listener reads it at connect and with every keepalive, and /status says when this worker
listens but the database does not notify (it then relies on the poll interval).

A chain that lingers (docs/performance.md "Cost at any arrival rate") claims at the signal: one action instead of a
Schedule run's three. An urgent commit (payload 'urgent', beside its 'new') shortens the debounce to
URGENT_DEBOUNCE_S and signals a chain that backs off, whose claim then admits the row (docs/priority.md).

The run is still an action of the Schedule (visible in the Web UI), and BUFFER_ONE collapses triggers from many
workers and many commits into at most one run after the one in progress. The schedules keep their intervals as the
safety net: a lost notification, a dropped connection or a transaction pooler only costs latency, never a send.

Temporal runs a triggered action even on a paused schedule, so every trigger is preceded by a fresh `describe` (at
most one per debounce window per kind and worker). The residual race is the few milliseconds between that describe
and the trigger: a pause that lands exactly there lets that one run start (README "Wake-ups").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from urllib.parse import urlsplit

import asyncpg
from temporalio.client import Client, ScheduleDescription, ScheduleOverlapPolicy, WorkflowExecutionStatus

from xnovu.config import Settings
from xnovu.core.arrivals import Arrivals
from xnovu.core.models import PollKind
from xnovu.db.queries import q
from xnovu.db.repository import database_url
from xnovu.temporal.schedules import schedule_id
from xnovu.temporal.workflows import LINGER_MEMO, WAKE_SIGNAL

log = logging.getLogger(__name__)

#: The channel the triggers of migrations 0005/0007 notify on; payload = the poll kind.
CHANNEL = "xnovu_wakeup"
#: Shown in pg_stat_activity, so operators (and tests) can tell the LISTEN connection apart.
APPLICATION_NAME = "xnovu-wakeup"
#: Kinds a notification may name; anything else on the channel is ignored.
WAKE_KINDS = {PollKind.NEW.value: PollKind.NEW, PollKind.SCHEDULED.value: PollKind.SCHEDULED}
#: The payload of a commit that made an urgent row due (migration 0015, beside its 'new'): the running new-rows
#: chain is signalled to claim now. A schedule trigger alone would buffer a run behind that chain, and the chain
#: claims again only after its capacity back-off (docs/priority.md "Wake-ups of urgent rows").
URGENT = "urgent"
#: An urgent commit's wake-up waits at most this long behind the previous one, not the whole WAKEUP_DEBOUNCE_MS (whose
#: fold is a cost/latency trade for ordinary rows); a storm of urgent commits still costs at most one signal per
#: this window and worker.
URGENT_DEBOUNCE_S = 0.1
#: An idle LISTEN connection is pinged this often: a half-open TCP connection never reports that it is gone.
KEEPALIVE_S = 15.0
PING_TIMEOUT_S = 5.0
CONNECT_TIMEOUT_S = 10.0
RECONNECT_MIN_S = 0.5
RECONNECT_MAX_S = 30.0
RPC_TIMEOUT = timedelta(seconds=5)

#: /status `reason` while this worker listens but the database's switch is off.
DATABASE_OFF = (
    "switched off in the database (`xnovu db wakeups on` switches them on): "
    "new notifications wait for the poll interval"
)

State = Literal["off", "connecting", "connected", "reconnecting"]


def off_reason(settings: Settings) -> str | None:
    """Why wake-ups cannot run with these settings, or None when they can."""
    if not settings.wakeup_enabled:
        return "WAKEUP_ENABLED is false"
    if settings.transaction_pooler:
        return (
            "DATABASE_URL goes through a transaction pooler (port 6543 or pgbouncer=true), which cannot LISTEN; "
            "use a direct or session-mode connection for sub-second delivery"
        )
    return None


class WakeupListener:
    """One dedicated LISTEN connection per worker (not from the pool) that triggers the poll schedules.

    Per kind, the first notification wakes at once and later ones within WAKEUP_DEBOUNCE_MS are folded into one
    trailing wake-up, so a stream of commits costs at most one wake-up (a signal or a trigger) per window per worker.
    """

    def __init__(self, settings: Settings, client: Client, arrivals: Arrivals | None = None) -> None:
        self.settings = settings
        self.client = client
        self.arrivals = arrivals
        self.debounce_s = settings.wakeup_debounce_ms / 1000
        reason = off_reason(settings)
        self.enabled = reason is None
        self.state: State = "off" if reason else "connecting"
        self.reason: str | None = reason
        self.backend_pid: int | None = None
        self.notifications_received = 0
        self.wakeups_sent = 0
        self.skipped_paused = 0
        self.errors = 0
        self.reconnects = 0
        self.last_wakeup_at: float | None = None
        #: The database's switch as last read: False = the triggers do not notify; None = not read yet (or no switch
        #: before migration 0007, when they always notify).
        self.database_notify: bool | None = None
        self.urgent_signals_sent = 0
        self.linger_signals_sent = 0
        self._pending: set[PollKind] = set()
        self._last_fire: dict[PollKind, float] = {}
        #: An urgent commit was heard since the last new-rows wake-up; set with `_hurry` to cut a pending wait short.
        self._urgent = False
        self._hurry = asyncio.Event()
        self._fires: set[asyncio.Task[None]] = set()
        self._task: asyncio.Task[None] | None = None

    @property
    def pending(self) -> bool:
        """A trigger is waiting for its window or in flight."""
        return bool(self._pending) or any(not t.done() for t in self._fires)

    async def start(self) -> None:
        """Start listening in the background; says once in the log when wake-ups are off, and why."""
        if not self.enabled:
            log.warning(
                "wake-ups are off; new notifications wait for the next poll tick",
                extra={"reason": self.reason, "poll_interval_ms": self.settings.poll_interval_ms},
            )
            return
        self._task = asyncio.create_task(self._run(), name="wakeup-listener")

    async def stop(self) -> None:
        """Close the LISTEN connection and drop triggers not yet sent (the schedules' ticks cover them)."""
        tasks = [t for t in (self._task, *self._fires) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._task = None
        if self.enabled:
            self.state = "off"
            self.reason = "the worker is stopping"

    def status(self) -> dict[str, Any]:
        """The `wakeup` section of /status."""
        last = self.last_wakeup_at
        reason = self.reason
        if self.state == "connected" and self.database_notify is False:
            reason = DATABASE_OFF
        return {
            "enabled": self.enabled,
            "state": self.state,
            "reason": reason,
            "database_notify": self.database_notify,
            "debounce_ms": self.settings.wakeup_debounce_ms,
            "notifications_received": self.notifications_received,
            "wakeups_sent": self.wakeups_sent,
            "urgent_signals_sent": self.urgent_signals_sent,
            "linger_signals_sent": self.linger_signals_sent,
            "skipped_paused": self.skipped_paused,
            "errors": self.errors,
            "reconnects": self.reconnects,
            "last_wakeup_at": datetime.fromtimestamp(last, UTC).isoformat() if last is not None else None,
        }

    # -- the connection ---------------------------------------------------------------------------------------

    async def _run(self) -> None:
        """Listen until stopped; after any loss, reconnect with capped exponential backoff and jitter."""
        url = database_url(self.settings)
        delay = RECONNECT_MIN_S
        connected_before = False
        while True:
            conn: asyncpg.Connection | None = None
            try:
                conn = await asyncpg.connect(
                    url,
                    timeout=CONNECT_TIMEOUT_S,
                    statement_cache_size=0,
                    server_settings={"application_name": APPLICATION_NAME},
                )
                lost = asyncio.Event()
                conn.add_termination_listener(lambda _conn, lost=lost: lost.set())
                await conn.add_listener(CHANNEL, self._on_notification)
                self.backend_pid = conn.get_server_pid()
                if connected_before:
                    self.reconnects += 1
                connected_before = True
                self.state, self.reason = "connected", None
                await self._read_switch(conn)
                delay = RECONNECT_MIN_S
                log.info("wake-ups listening", extra={"channel": CHANNEL, "backend_pid": self.backend_pid})
                # Commits made while nobody listened were never heard: one wake-up per kind catches up on them.
                for kind in WAKE_KINDS.values():
                    self._request(kind)
                while not lost.is_set():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(lost.wait(), KEEPALIVE_S)
                    if not lost.is_set():
                        await asyncio.wait_for(self._read_switch(conn), PING_TIMEOUT_S)  # the keepalive ping
                reason = "the LISTEN connection was closed by the server"
            except Exception as exc:
                reason = f"{type(exc).__name__}: {self._clean(exc)}"
            finally:
                if conn is not None and not conn.is_closed():
                    conn.terminate()
            self.state, self.reason = "reconnecting", reason
            wait = delay * random.uniform(0.8, 1.2)
            log.warning(
                "wake-up connection lost; polling at the schedules' intervals until it is back",
                extra={"reason": reason, "retry_in_s": round(wait, 2)},
            )
            await asyncio.sleep(wait)
            delay = min(delay * 2, RECONNECT_MAX_S)

    async def _read_switch(self, conn: asyncpg.Connection) -> None:
        """Read the database's switch; say in the log when it changes to off (and back)."""
        try:
            row = await conn.fetchrow(q("wakeup_switch"))
        except asyncpg.UndefinedTableError:  # before migration 0007: the triggers always notify
            notify = None
        else:
            notify = True if row is None else bool(row["notify"])
        if notify is False and self.database_notify is not False:
            log.warning("wake-ups are " + DATABASE_OFF, extra={"poll_interval_ms": self.settings.poll_interval_ms})
        elif notify and self.database_notify is False:
            log.info("wake-ups switched back on in the database")
        self.database_notify = notify

    def _clean(self, exc: BaseException) -> str:
        """The first line of an error, without the database password (I6)."""
        text = str(exc).splitlines()[0] if str(exc) else ""
        password = urlsplit(database_url(self.settings)).password
        return text.replace(password, "***") if password else text

    def _on_notification(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        if payload == URGENT:
            # The same commit also notified 'new' (migration 0015): its wake-up goes out within URGENT_DEBOUNCE_S
            # instead of the whole window, and signals the running chain whatever it is doing.
            self.notifications_received += 1
            self._urgent = True
            self._request(PollKind.NEW)
            return
        kind = WAKE_KINDS.get(payload)
        if kind is None:
            log.debug("ignored a notification on the wake-up channel", extra={"payload": payload[:40]})
            return
        self.notifications_received += 1
        if kind is PollKind.NEW and self.arrivals is not None:
            self.arrivals.heard()
        self._request(kind)

    # -- throttled triggers -----------------------------------------------------------------------------------

    def _request(self, kind: PollKind) -> None:
        """Ask for one wake-up of `kind`: now if none was sent within the window, else at the window's end (an urgent
        commit shortens a pending new-rows wait to URGENT_DEBOUNCE_S)."""
        if kind in self._pending:
            if self._urgent and kind is PollKind.NEW:
                self._hurry.set()  # the queued wake-up goes out sooner and will see this commit
            return
        self._pending.add(kind)
        task = asyncio.create_task(self._fire(kind), name=f"wakeup-{kind.value}")
        self._fires.add(task)
        task.add_done_callback(self._fires.discard)

    def _window_s(self, kind: PollKind) -> float:
        return min(self.debounce_s, URGENT_DEBOUNCE_S) if kind is PollKind.NEW and self._urgent else self.debounce_s

    async def _fire(self, kind: PollKind) -> None:
        """One wake-up of `kind` after its debounce window: the pause check, then for new rows a wake signal to the
        running chain where one does the job (it lingers, or an urgent row needs it), else the schedule trigger."""
        while (delay := self._last_fire.get(kind, float("-inf")) + self._window_s(kind) - time.monotonic()) > 0:
            if kind is PollKind.NEW:
                self._hurry.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._hurry.wait(), delay)
            else:
                await asyncio.sleep(delay)
        # From here on, a new notification queues another wake-up: this one may run before its commit is visible.
        self._pending.discard(kind)
        urgent = kind is PollKind.NEW and self._urgent
        if kind is PollKind.NEW:
            self._urgent = False
        self._last_fire[kind] = time.monotonic()
        sid = schedule_id(kind)
        try:
            # Temporal runs a triggered action even on a paused schedule, so the pause is checked here (and a pause
            # also holds the running chain: a wake must not start work a pause held back).
            desc = await self.client.get_schedule_handle(sid).describe(rpc_timeout=RPC_TIMEOUT)
            if desc.schedule.state.paused:
                self.skipped_paused += 1
                log.debug("wake-up skipped: schedule paused", extra={"schedule_id": sid})
                return
            if kind is PollKind.NEW and await self._wake_chain(desc, urgent=urgent):
                self.last_wakeup_at = time.time()
                return
            await self.client.get_schedule_handle(sid).trigger(
                overlap=ScheduleOverlapPolicy.BUFFER_ONE, rpc_timeout=RPC_TIMEOUT
            )
        except Exception as exc:
            # Temporal unreachable or the schedule missing: the next tick picks the rows up.
            self.errors += 1
            log.warning("wake-up trigger failed", extra={"schedule_id": sid, "error": f"{type(exc).__name__}: {exc}"})
            return
        self.wakeups_sent += 1
        self.last_wakeup_at = time.time()
        log.debug("wake-up sent", extra={"schedule_id": sid})

    async def _wake_chain(self, desc: ScheduleDescription, *, urgent: bool) -> bool:
        """Signal the new-rows run the schedule is running, when that is what the commit needs; True when the signal
        replaces the schedule trigger.

        - The run lingers (open for wake signals after it drained, WAKEUP_LINGER_MS; its memo says so): the signal
          (one action) makes it claim, instead of a schedule run (three and a claim). True.
        - An urgent row became due and the run drains or backs off: the signal ends its capacity back-off at once
          (docs/priority.md "Wake-ups of urgent rows"); the trigger still follows (buffered behind the run, it costs
          nothing until the run closes). False.
        - Otherwise nothing is sent: the trigger is buffered behind the run, which the signal would not hurry.
        The describes cost no action (a query would). A run that closed between the describe and the signal makes the
        signal fail: the trigger then starts a run that claims the rows."""
        if not urgent and self.settings.wakeup_linger_ms <= 0:
            return False
        for action in desc.info.running_actions:
            workflow_id = getattr(action, "workflow_id", None)
            if not workflow_id:
                continue
            handle = self.client.get_workflow_handle(workflow_id)
            try:
                run = await handle.describe(rpc_timeout=RPC_TIMEOUT)
                if run.status != WorkflowExecutionStatus.RUNNING:
                    continue
                owner = (await run.memo()).get(LINGER_MEMO)
                lingering = bool(owner)
                if lingering and isinstance(owner, str) and self.arrivals and owner != self.arrivals.identity:
                    # Another worker's claim made it linger: its listener hears this commit too and signals it.
                    log.debug("lingering run left to its owner", extra={"workflow_id": workflow_id})
                    return True
                if not (lingering or urgent):
                    continue
                await handle.signal(WAKE_SIGNAL, rpc_timeout=RPC_TIMEOUT)
            except Exception as exc:
                log.debug("running chain not woken", extra={"workflow_id": workflow_id, "error": type(exc).__name__})
                continue
            if urgent:
                self.urgent_signals_sent += 1
            if lingering:
                self.linger_signals_sent += 1
            log.debug("wake signal sent", extra={"workflow_id": workflow_id, "lingering": lingering, "urgent": urgent})
            if lingering:
                return True
        return False
