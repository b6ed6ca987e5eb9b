"""xnovu's own schedules: one per poll kind, `xnovu-rules-sync` (README "Rules") and `xnovu-retention`
(docs/retention.md); singletons inside Temporal.

Pause, resume and trigger also accept a rule's Schedule (`xnovu-rule-{id}`, kept by xnovu.temporal.rules).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleHandle,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
    ScheduleState,
    ScheduleUpdate,
    ScheduleUpdateInput,
)
from temporalio.service import RPCError, RPCStatusCode

from xnovu.config import Settings
from xnovu.core.models import PollInput, PollKind
from xnovu.core.models import schedule_id as schedule_id
from xnovu.core.retention import RETENTION_SCHEDULE_ID, PruneStepInput
from xnovu.core.rules import parse_rule_schedule_id
from xnovu.errors import XnovuError
from xnovu.temporal.options import poll_task_queue
from xnovu.temporal.workflows import CAPACITY_WAIT_MAX, CLAIM_RETRY, CLAIM_TIMEOUT, PollNotificationsWorkflow

NOTES = {
    PollKind.NEW: "Claims due, published PENDING notifications and starts one child workflow per row.",
    PollKind.FAILED: "Retries FAILED rows once their backoff is over; recovers PROCESSING rows past their lease.",
    PollKind.SCHEDULED: "Claims notifications due within the look-ahead; each child waits on a timer until its time.",
}
#: A tick missed while the server or workers were down is caught up within this window, not a year later.
CATCHUP_WINDOW = timedelta(minutes=1)

RULES_SYNC_ID = "xnovu-rules-sync"
RULES_SYNC_NOTE = "Keeps one Schedule xnovu-rule-{id} per published, active CRON rule in step with the rules table."
RETENTION_ID = RETENTION_SCHEDULE_ID
RETENTION_NOTE = (
    "Prunes xnovu's own records (delivery ledger, rule fires, spent budget rows) of notifications that ended more "
    "than RETENTION_DAYS ago, in short batches (docs/retention.md)."
)
#: How often the prune runs. Each run removes what ended since the last one, so an hour's worth is a short run; a
#: backlog (the first run on a table of years) takes as many steps as it needs, at most half of one connection.
RETENTION_INTERVAL = timedelta(hours=1)
#: One run of the retention workflow: its steps (each at most a minute, docs/retention.md) until it continues as new.
RETENTION_RUN_TIMEOUT = timedelta(hours=3)
#: A schedule xnovu owns: a poll kind, the rules sync or the retention.
ScheduleName = PollKind | str


def parse_schedule(name: str) -> ScheduleName:
    """A poll kind, `xnovu-rules-sync` (or `rules-sync`), `xnovu-retention` (or `retention`), or a rule Schedule
    `xnovu-rule-{id}`."""
    if name in (RULES_SYNC_ID, "rules-sync"):
        return RULES_SYNC_ID
    if name in (RETENTION_ID, "retention"):
        return RETENTION_ID
    if parse_rule_schedule_id(name) is not None:
        return name
    try:
        return parse_kind(name)
    except XnovuError as exc:
        raise XnovuError(f"{exc}, {RULES_SYNC_ID}, {RETENTION_ID} or a rule's xnovu-rule-ID") from None


def any_schedule_id(name: ScheduleName) -> str:
    return schedule_id(name) if isinstance(name, PollKind) else name


def parse_kind(name: str) -> PollKind:
    """`new`, `xnovu-poll-new` → PollKind.NEW; a readable error otherwise."""
    short = name.removeprefix("xnovu-poll-")
    try:
        return PollKind(short)
    except ValueError:
        valid = ", ".join(schedule_id(k) for k in PollKind)
        raise XnovuError(f"unknown schedule {name!r}; use one of {valid} (or new, failed, scheduled)") from None


def worst_poll_run() -> timedelta:
    """A poll run's claim at its worst plus its longest back-pressure sleep (child starts take seconds)."""
    return _worst_claim() + CAPACITY_WAIT_MAX


def _worst_claim() -> timedelta:
    """The longest a poll run's claim can take: every try of CLAIM_RETRY at CLAIM_TIMEOUT, plus the backoffs."""
    tries = CLAIM_RETRY.maximum_attempts
    backoff, waits = CLAIM_RETRY.initial_interval, timedelta(0)
    for _ in range(tries - 1):
        waits += backoff
        backoff = min(backoff * CLAIM_RETRY.backoff_coefficient, CLAIM_RETRY.maximum_interval or backoff)
    return CLAIM_TIMEOUT * tries + waits


#: What bounds one run of a poll (docs/design.md, "Poll schedules' timeouts"). A run claims one batch, starts its
#: children and sleeps at most CAPACITY_WAIT_MAX before it continues as new: `worst_poll_run()`, under 3 minutes;
#: ten minutes is well above that. There is no execution timeout: a timeout on the action covers the whole
#: continue-as-new chain, and a drain or back-pressure chain may rightly last for hours (its rows' leases are kept by
#: their attempts, not by the poll).
POLL_RUN_TIMEOUT = timedelta(minutes=10)
#: The rules sync is one run (it never continues as new): the bound it always had.
RULES_SYNC_RUN_TIMEOUT = timedelta(hours=1)


def desired_schedule(
    settings: Settings,
    kind: PollKind,
    state: ScheduleState | None = None,
    *,
    run_timeout: timedelta | None = POLL_RUN_TIMEOUT,
    execution_timeout: timedelta | None = None,
    task_queue: str | None = None,
) -> Schedule:
    """The schedule as configuration says it should be; `state` (paused, note) is kept from the server.

    The timeouts are parameters so a test can run the chain on seconds; xnovu itself uses the defaults.
    """
    return Schedule(
        action=ScheduleActionStartWorkflow(
            PollNotificationsWorkflow.run,
            PollInput(kind),
            id=schedule_id(kind),
            task_queue=task_queue or poll_task_queue(settings.temporal_task_queue),
            execution_timeout=execution_timeout,
            run_timeout=run_timeout,
        ),
        spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=timedelta(seconds=settings.interval_seconds(kind)))]),
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.BUFFER_ONE, catchup_window=CATCHUP_WINDOW),
        state=state or ScheduleState(note=NOTES[kind]),
    )


def desired_rules_sync_schedule(settings: Settings, state: ScheduleState | None = None) -> Schedule:
    """`xnovu-rules-sync`: every RULES_SYNC_INTERVAL_MS, never two syncs at once."""
    return Schedule(
        action=ScheduleActionStartWorkflow(
            "SyncRulesWorkflow",
            id=RULES_SYNC_ID,
            task_queue=settings.temporal_task_queue,
            run_timeout=RULES_SYNC_RUN_TIMEOUT,
        ),
        spec=ScheduleSpec(
            intervals=[ScheduleIntervalSpec(every=timedelta(seconds=settings.interval_seconds("rules-sync")))]
        ),
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.BUFFER_ONE, catchup_window=CATCHUP_WINDOW),
        state=state or ScheduleState(note=RULES_SYNC_NOTE),
    )


def desired_retention_schedule(settings: Settings, state: ScheduleState | None = None) -> Schedule:
    """`xnovu-retention`: every RETENTION_INTERVAL; a tick while a prune still runs is skipped (the next one finds
    what is left)."""
    return Schedule(
        action=ScheduleActionStartWorkflow(
            "PruneRetentionWorkflow",
            PruneStepInput(),
            id=RETENTION_ID,
            task_queue=settings.temporal_task_queue,
            run_timeout=RETENTION_RUN_TIMEOUT,
        ),
        spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=RETENTION_INTERVAL)]),
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP, catchup_window=CATCHUP_WINDOW),
        state=state or ScheduleState(note=RETENTION_NOTE),
    )


def _desired(
    settings: Settings, name: ScheduleName, state: ScheduleState | None = None, task_queue: str | None = None
) -> Schedule:
    if isinstance(name, PollKind):
        return desired_schedule(settings, name, state, task_queue=task_queue)
    if name == RETENTION_ID:
        return desired_retention_schedule(settings, state)
    return desired_rules_sync_schedule(settings, state)


SYSTEM_SCHEDULES: tuple[ScheduleName, ...] = (*PollKind, RULES_SYNC_ID, RETENTION_ID)


def _fingerprint(schedule: Schedule) -> tuple[Any, ...]:
    """What bootstrap manages: interval, workflow, task queue, timeouts, overlap and catch-up (not state).

    The timeouts are part of it so that an installed deployment's schedules get new ones on its next start (an
    earlier release gave the polls a one-hour execution timeout over the whole continue-as-new chain).
    """
    action = schedule.action
    assert isinstance(action, ScheduleActionStartWorkflow)
    return (
        tuple(i.every for i in schedule.spec.intervals),
        action.workflow,
        action.task_queue,
        action.execution_timeout,
        action.run_timeout,
        schedule.policy.overlap,
        schedule.policy.catchup_window,
    )


async def ensure_schedules(client: Client, settings: Settings, *, serves_poll_queue: bool = False) -> dict[str, str]:
    """Create each schedule, or update spec/action/policy while keeping its paused state and note.

    A poll schedule of an earlier release starts its runs on TEMPORAL_TASK_QUEUE, which only that release's workers
    serve for polls. Only a bootstrap that is about to serve the polls' own queue (`serves_poll_queue`: a worker
    starting) moves it there; `xnovu bootstrap` run as a release job before the new workers roll out leaves it on
    the main queue, so the old workers go on claiming until the first new worker starts (docs/design.md "Task
    queues").

    Returns schedule id → "created" | "updated" | "unchanged". Running it twice changes nothing.
    """
    outcome: dict[str, str] = {}
    for kind in SYSTEM_SCHEDULES:
        sid = any_schedule_id(kind)
        desired = _desired(settings, kind)
        try:
            await client.create_schedule(sid, desired)
            outcome[sid] = "created"
            continue
        except ScheduleAlreadyRunningError:
            pass
        handle = client.get_schedule_handle(sid)
        current = (await handle.describe()).schedule
        queue: str | None = None
        action = current.action
        if (
            isinstance(kind, PollKind)
            and not serves_poll_queue
            and isinstance(action, ScheduleActionStartWorkflow)
            and action.task_queue == settings.temporal_task_queue
        ):
            queue = settings.temporal_task_queue  # an earlier release's poll schedule: its workers serve it there
            desired = _desired(settings, kind, task_queue=queue)
        if _fingerprint(current) == _fingerprint(desired):
            outcome[sid] = "unchanged"
            continue

        def keep_state(
            update: ScheduleUpdateInput, kind: ScheduleName = kind, queue: str | None = queue
        ) -> ScheduleUpdate:
            return ScheduleUpdate(schedule=_desired(settings, kind, update.description.schedule.state, queue))

        await handle.update(keep_state)
        outcome[sid] = "updated"
    return outcome


@dataclass(frozen=True)
class ScheduleInfo:
    """What `xnovu schedules list` and /status show."""

    id: str
    paused: bool
    note: str
    interval_s: float
    next_run: datetime | None
    last_run: datetime | None
    running: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "paused": self.paused,
            "note": self.note,
            "interval_s": self.interval_s,
            "next_run": self.next_run.isoformat() if self.next_run else None,
            "last_run": self.last_run.isoformat() if self.last_run else None,
            "running": self.running,
        }


async def describe_schedules(client: Client) -> list[ScheduleInfo]:
    out: list[ScheduleInfo] = []
    for kind in SYSTEM_SCHEDULES:
        try:
            d = await client.get_schedule_handle(any_schedule_id(kind)).describe()
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                continue
            raise
        recent = d.info.recent_actions
        out.append(
            ScheduleInfo(
                id=d.id,
                paused=d.schedule.state.paused,
                note=d.schedule.state.note or "",
                interval_s=sum(i.every.total_seconds() for i in d.schedule.spec.intervals[:1]),
                next_run=d.info.next_action_times[0] if d.info.next_action_times else None,
                last_run=recent[-1].started_at if recent else None,
                running=len(d.info.running_actions),
            )
        )
    return out


def _resume_note(name: ScheduleName, stamp: str) -> str:
    if isinstance(name, PollKind):
        return NOTES[name]
    if name == RULES_SYNC_ID:
        return RULES_SYNC_NOTE
    if name == RETENTION_ID:
        return RETENTION_NOTE
    return f"resumed with `xnovu schedules resume` at {stamp}"


async def set_paused(
    client: Client, kinds: list[PollKind] | list[ScheduleName], paused: bool, note: str | None = None
) -> list[str]:
    """Pause or resume; the note records who/why (shown in the Web UI and `schedules list`).

    Every patch is sent first and then all are awaited together, so pausing four Schedules on a slow server waits
    for the slowest one, not for the sum; a patch the server dropped is sent again (`_settled`). An operator's pause
    of a rule Schedule is kept by the rules sync (its note is not the sync's own).
    """
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    handles = [client.get_schedule_handle(any_schedule_id(kind)) for kind in kinds]
    # Read before sending: a Schedule still at this token has not applied the patch (queued, or replaced by a
    # trigger that reached it in the same step), so sending it again is safe; past it, someone changed it meanwhile.
    tokens = await asyncio.gather(*(_conflict_token(handle) for handle in handles))
    patches: list[tuple[ScheduleHandle, Callable[[], Awaitable[None]], int]] = []
    for kind, handle, token in zip(kinds, handles, tokens, strict=True):
        text = note or (f"paused with `xnovu schedules pause` at {stamp}" if paused else _resume_note(kind, stamp))
        patch = partial(handle.pause if paused else handle.unpause, note=text)
        await patch()
        patches.append((handle, patch, token))
    waits = [asyncio.ensure_future(_settled(handle, paused, patch, token)) for handle, patch, token in patches]
    try:
        await asyncio.gather(*waits)
    finally:
        for wait in waits:
            wait.cancel()  # the others stop reading when one gives up
    return [handle.id for handle, _, _ in patches]


async def _conflict_token(handle: ScheduleHandle) -> int:
    try:
        return _token((await handle.describe()).raw_description.conflict_token)
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            raise _no_such_schedule(handle.id) from None
        raise


def _no_such_schedule(sid: str) -> XnovuError:
    return XnovuError(
        f"no schedule {sid} in this namespace: `xnovu schedules list` shows xnovu's, `xnovu rules list` the rules'; "
        "run `xnovu bootstrap` if none exist yet"
    )


def _token(raw: bytes) -> int:
    """The Schedule's conflict token: the server adds one for every pause, resume or update it applies."""
    return int.from_bytes(raw, "big")


#: How long `set_paused` waits for a Schedule to report the state it was just given.
SETTLE_TIMEOUT_S = 60.0
#: While a Schedule still reads the old state at the conflict token read before sending (the patch was not applied:
#: queued, or replaced by a trigger in the same step), its patch is sent again this often.
SETTLE_RESEND_S = 1.0
#: The first and the longest pause between two reads of the Schedule's state.
SETTLE_POLL_S = (0.1, 1.0)


async def _settled(
    handle: ScheduleHandle, paused: bool, resend: Callable[[], Awaitable[None]], token_before: int
) -> None:
    """Return once the Schedule describes itself as `paused`, so that a pause is in effect when the command returns.

    A pause or resume is a patch the Schedule applies when it next takes a step, and in one step the server keeps
    only the last patch it received: a trigger arriving in the same step (a worker's wake-up, `schedules trigger`)
    replaces the pause, which is then gone, not late. That is how a pause still read unpaused 30 s later on CI
    (tests/integration/test_attack19.py reproduces it). So while the Schedule reads the old state at the conflict
    token read before sending (`token_before`: the patch was not applied), the patch is sent again every
    `SETTLE_RESEND_S`; once the token moved and the state is still not the one asked for, someone else paused,
    resumed or updated it meanwhile, and the command stops and says so rather than undo that. It gives up after
    `SETTLE_TIMEOUT_S`. The reads back off from 0.1 s to 1 s (each is a query to the Schedule). The claim checks the
    Schedule's state again before claiming (xnovu/temporal/activities.py), which is only sound once the state reads
    back as set.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + SETTLE_TIMEOUT_S
    next_resend = loop.time() + SETTLE_RESEND_S
    wait, longest = SETTLE_POLL_S
    while (desc := await handle.describe()).schedule.state.paused != paused:
        now = loop.time()
        if _token(desc.raw_description.conflict_token) != token_before:
            now_state = "paused" if desc.schedule.state.paused else "running"
            raise XnovuError(
                f"schedule {handle.id} was changed by someone else meanwhile and is {now_state} (note: "
                f"{desc.schedule.state.note!r}); run the command again to {'pause' if paused else 'resume'} it anyway"
            )
        if now > deadline:
            raise XnovuError(
                f"schedule {handle.id} still reads {'un' if paused else ''}paused {SETTLE_TIMEOUT_S:g} s after the "
                "change; check the Temporal server's health and run the command again"
            )
        if now >= next_resend:
            await resend()
            next_resend = now + SETTLE_RESEND_S
        await asyncio.sleep(wait)
        wait = min(longest, wait * 2)


async def trigger_now(client: Client, kind: ScheduleName) -> None:
    """Run one poll (or sync, or rule fire) now (BUFFER_ONE: it waits for a running one instead of overlapping)."""
    sid = any_schedule_id(kind)
    try:
        await client.get_schedule_handle(sid).trigger(overlap=ScheduleOverlapPolicy.BUFFER_ONE)
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            raise _no_such_schedule(sid) from None
        raise


async def run_rules_sync_at_start(client: Client, *, just_created: bool = False) -> bool:
    """Bootstrap runs one rules sync right away unless the sync schedule is paused; True if triggered.

    `just_created`: this bootstrap created the schedule a moment ago, unpaused, so it is not described first (a new
    schedule's describe waits for its first step: about half a second of every first start)."""
    handle = client.get_schedule_handle(RULES_SYNC_ID)
    if not just_created and (await handle.describe()).schedule.state.paused:
        return False
    await handle.trigger(overlap=ScheduleOverlapPolicy.BUFFER_ONE)
    return True
