"""Rule Schedules (README "Rules"): reconcile `notify.ent_notification_rule` with one Schedule per CRON rule.

    Schedule xnovu-rules-sync ──▶ SyncRulesWorkflow ──▶ sync_rules (activity) ──▶ reconcile()
    Schedule xnovu-rule-{id}  ──▶ FireRuleWorkflow  ──▶ fire_rule (activity)  ──▶ one notification per fire

Reconcile only touches Schedules whose id is `xnovu-rule-{number}`. Every step is idempotent (create, or describe
and update; pause; unpause; delete with NOT_FOUND as success), so two syncs racing (two workers, a manual
`xnovu rules sync`) converge on the same state. Pauses xnovu makes carry a note with a fixed prefix; a Schedule an
operator paused is never unpaused by a sync.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleCalendarSpec,
    ScheduleDescription,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleRange,
    ScheduleSpec,
    ScheduleState,
    ScheduleUpdate,
)
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from xnovu.config import Settings
from xnovu.core.rules import (
    NOT_HANDLED,
    SYNC_NOTE_PREFIX,
    FireRequest,
    FireResult,
    Rule,
    RulePlan,
    RuleState,
    SyncReport,
    dst_gap_fires,
    fire_stamp,
    fire_time,
    fire_workflow_id,
    fire_workflow_prefix,
    parse_rule_schedule_id,
    plan_rule,
    rule_schedule_id,
)
from xnovu.db.rules import RuleRepository
from xnovu.errors import XnovuError
from xnovu.temporal import searchattrs

log = logging.getLogger(__name__)

FIRE_WORKFLOW = "FireRuleWorkflow"
#: A fire is one short activity; an hour bounds a fire stuck behind a long database outage.
FIRE_EXECUTION_TIMEOUT = timedelta(hours=1)
#: The action memo keeps the cron as written: Temporal compiles it into calendars, so describe cannot give it back.
CRON_MEMO = "xnovu_cron"
#: The DST-gap fires added to the spec (their instants), compared like the cron.
DST_MEMO = "xnovu_dst_gap_fires"
RULE_MEMO = "rule"


@dataclass(frozen=True)
class RuleScheduleConfig:
    """What rule Schedules take from Settings (the sync activity never reads settings itself)."""

    task_queue: str
    catchup_window: timedelta


def rule_schedule_config(settings: Settings) -> RuleScheduleConfig:
    return RuleScheduleConfig(
        task_queue=settings.temporal_task_queue,
        catchup_window=timedelta(milliseconds=settings.rules_catchup_window_ms),
    )


def dst_calendars(plan: RulePlan, now: datetime) -> tuple[list[ScheduleCalendarSpec], str]:
    """Calendar entries for fires whose local time the clocks jump over, and their memo text (see dst_gap_fires)."""
    assert plan.cron is not None
    zone = ZoneInfo(plan.timezone)
    fires = dst_gap_fires(plan.cron, plan.timezone, now)
    calendars = []
    for instant in fires:
        wall = instant.astimezone(zone)
        calendars.append(
            ScheduleCalendarSpec(
                second=(ScheduleRange(0),),
                minute=(ScheduleRange(wall.minute),),
                hour=(ScheduleRange(wall.hour),),
                day_of_month=(ScheduleRange(wall.day),),
                month=(ScheduleRange(wall.month),),
                year=(ScheduleRange(wall.year),),
                comment="a fire whose local time the clocks jump over, made just after the jump",
            )
        )
    return calendars, ",".join(fire_stamp(f) for f in fires)


def desired_rule_schedule(
    rule: Rule, plan: RulePlan, cfg: RuleScheduleConfig, now: datetime | None = None
) -> Schedule:
    """The Schedule of a rule whose cron and timezone are valid; paused with the reason when it must not fire.

    BUFFER_ALL: fires missed while Temporal or the workers were down, within the catch-up window, each run once,
    in order (each has its own scheduled time and so its own notification).
    """
    assert plan.cron is not None
    calendars, dst_memo = dst_calendars(plan, now or datetime.now(UTC))
    return Schedule(
        action=ScheduleActionStartWorkflow(
            FIRE_WORKFLOW,
            FireRequest(rule.id),
            id=fire_workflow_prefix(rule.id),
            task_queue=cfg.task_queue,
            execution_timeout=FIRE_EXECUTION_TIMEOUT,
            memo={RULE_MEMO: rule.name, CRON_MEMO: plan.cron, DST_MEMO: dst_memo},
            typed_search_attributes=searchattrs.for_rule(rule.id, rule.enterprise_id),
        ),
        spec=ScheduleSpec(cron_expressions=[plan.cron], calendars=calendars, time_zone_name=plan.timezone),
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.BUFFER_ALL, catchup_window=cfg.catchup_window),
        state=ScheduleState(paused=not plan.active, note=plan.note),
    )


def _fingerprint(schedule: Schedule, memo: dict[str, Any]) -> tuple[Any, ...]:
    """What a sync manages (not the state): cron, timezone, workflow, queue, policies, memo."""
    action = schedule.action
    assert isinstance(action, ScheduleActionStartWorkflow)
    return (
        memo.get(CRON_MEMO),
        memo.get(DST_MEMO),
        memo.get(RULE_MEMO),
        schedule.spec.time_zone_name or "UTC",
        action.workflow,
        action.id,
        action.task_queue,
        action.execution_timeout,
        schedule.policy.overlap,
        schedule.policy.catchup_window,
    )


def _action_memo(client: Client, schedule: Schedule) -> dict[str, Any]:
    """The action memo of a described Schedule (raw payloads there, plain values on a Schedule we built)."""
    action = schedule.action
    assert isinstance(action, ScheduleActionStartWorkflow)
    out: dict[str, Any] = {}
    for key, value in (action.memo or {}).items():
        if hasattr(value, "metadata") and hasattr(value, "data"):
            value = client.data_converter.payload_converter.from_payloads([value])[0]
        out[key] = value
    return out


def _ours(state: ScheduleState) -> bool:
    """A pause xnovu made (and may undo), as opposed to an operator's."""
    return (state.note or "").startswith(SYNC_NOTE_PREFIX)


async def _describe(client: Client, schedule_id: str) -> ScheduleDescription | None:
    try:
        return await client.get_schedule_handle(schedule_id).describe()
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return None
        raise


async def _reconcile_one(
    client: Client, cfg: RuleScheduleConfig, rule: Rule, plan: RulePlan, report: SyncReport
) -> RuleState:
    sid = rule_schedule_id(rule.id)
    handle = client.get_schedule_handle(sid)
    if plan.spec_problem is not None:
        # No valid spec to create or update with: an existing Schedule keeps its old spec, paused with the reason.
        desc = await _describe(client, sid)
        if desc is None:
            return RuleState.NONE
        state = desc.schedule.state
        if not state.paused or (_ours(state) and state.note != plan.note):
            await handle.pause(note=plan.note)
            report.paused.append(rule.id)
        return RuleState.PAUSED
    desired = desired_rule_schedule(rule, plan, cfg)
    try:
        await client.create_schedule(sid, desired)
        report.created.append(rule.id)
        return RuleState.ACTIVE if plan.active else RuleState.PAUSED
    except ScheduleAlreadyRunningError:
        pass
    desc = await handle.describe()
    state = desc.schedule.state
    if state.paused and not _ours(state):
        target = state  # an operator's pause (and note) stays until the operator resumes
    elif plan.active:
        target = ScheduleState(paused=False, note=plan.note)
    else:
        target = ScheduleState(paused=True, note=plan.note)
    state_changed = (target.paused, target.note) != (state.paused, state.note)
    spec_changed = _fingerprint(desc.schedule, _action_memo(client, desc.schedule)) != _fingerprint(
        desired, _action_memo(client, desired)
    )
    if spec_changed:
        # An update replaces the state too: the target state goes with it (a separate pause/unpause could be
        # applied by the server before the update and then be overwritten by it).
        await handle.update(lambda _: ScheduleUpdate(schedule=replace(desired, state=target)))
        report.updated.append(rule.id)
    elif state_changed:
        if target.paused:
            await handle.pause(note=target.note)
        else:
            await handle.unpause(note=target.note)
    if state_changed and target.paused != state.paused:
        (report.paused if target.paused else report.resumed).append(rule.id)
    elif not spec_changed and not state_changed:
        report.unchanged.append(rule.id)
    return RuleState.PAUSED if target.paused else RuleState.ACTIVE


async def _listed_rule_schedules(client: Client) -> set[int]:
    """Rule ids of every `xnovu-rule-{id}` Schedule in the namespace (Temporal's list is eventually consistent)."""
    found: set[int] = set()
    async for entry in await client.list_schedules():
        rule_id = parse_rule_schedule_id(entry.id)
        if rule_id is not None:
            found.add(rule_id)
    return found


async def reconcile(client: Client, repo: RuleRepository, cfg: RuleScheduleConfig) -> SyncReport:
    """Make the namespace's rule Schedules match the rules table; one rule's trouble never stops the others."""
    report = SyncReport()
    previous = await repo.sync_states()
    rules = await repo.all()
    cron_rules = {r.id: r for r in rules if r.trigger_type == "CRON"}
    states: list[tuple[int, str, str | None]] = []
    for rule in cron_rules.values():
        plan = plan_rule(rule)
        problem = plan.problem
        try:
            state = await _reconcile_one(client, cfg, rule, plan, report)
        except RPCError as exc:
            if exc.status != RPCStatusCode.INVALID_ARGUMENT:
                raise  # Temporal itself is in trouble: the activity retries the whole (idempotent) sync
            problem = f"Temporal rejected the schedule: {exc.message}"
            bad = replace(plan, spec_problem=problem, problem=problem)
            state = await _reconcile_one(client, cfg, rule, bad, report)
        if problem is not None:
            report.problems[str(rule.id)] = problem
            before = previous.get(rule.id)
            if before is None or before.problem != problem:
                log.warning("rule has a problem", extra={"rule_id": rule.id, "rule": rule.name, "problem": problem})
        states.append((rule.id, state.value, problem))
    await repo.record_sync(states)

    orphans = (set(previous) | await _listed_rule_schedules(client)) - set(cron_rules)
    gone: list[int] = []
    for rule_id in sorted(orphans):
        current = await repo.get(rule_id)
        if current is not None and current.trigger_type == "CRON":
            continue  # created after this sync read the table: the next sync handles it
        try:
            await client.get_schedule_handle(rule_schedule_id(rule_id)).delete()
            report.deleted.append(rule_id)
            log.info("rule schedule deleted", extra={"rule_id": rule_id})
        except RPCError as exc:
            if exc.status != RPCStatusCode.NOT_FOUND:
                raise
        gone.append(rule_id)
    await repo.forget(gone)
    return report


# -- listing, triggering -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RuleInfo:
    """One line of `xnovu rules list`."""

    id: int
    name: str
    trigger_type: str
    cron: str | None
    timezone: str | None
    state: str
    next_fire: datetime | None
    last_fire: datetime | None
    problem: str | None
    note: str | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "trigger_type": self.trigger_type,
            "cron": self.cron,
            "timezone": self.timezone,
            "schedule_id": rule_schedule_id(self.id) if self.trigger_type == "CRON" else None,
            "state": self.state,
            "next_fire": self.next_fire.isoformat() if self.next_fire else None,
            "last_fire": self.last_fire.isoformat() if self.last_fire else None,
            "problem": self.problem,
            "note": self.note,
        }


async def list_rules(client: Client, repo: RuleRepository) -> list[RuleInfo]:
    """Every rule with its Schedule's state, next and last fire and its problem (checked now, or Temporal's)."""
    rules = await repo.all()
    recorded = await repo.sync_states()
    cron = [r for r in rules if r.trigger_type == "CRON"]
    descs = await asyncio.gather(*(_describe(client, rule_schedule_id(r.id)) for r in cron))
    by_id = dict(zip((r.id for r in cron), descs, strict=True))
    out: list[RuleInfo] = []
    for rule in rules:
        if rule.trigger_type != "CRON":
            out.append(
                RuleInfo(
                    rule.id, rule.name, rule.trigger_type, None, None, "not handled", None, None, NOT_HANDLED, None
                )
            )
            continue
        plan = plan_rule(rule)
        desc = by_id[rule.id]
        rec = recorded.get(rule.id)
        last = rec.last_fire if rec else None
        next_fire = None
        note = None
        if desc is None:
            state = RuleState.NONE.value
        else:
            state = (RuleState.PAUSED if desc.schedule.state.paused else RuleState.ACTIVE).value
            note = desc.schedule.state.note
            if desc.info.next_action_times and not desc.schedule.state.paused:
                next_fire = desc.info.next_action_times[0]
            if desc.info.recent_actions:
                scheduled = desc.info.recent_actions[-1].scheduled_at
                last = max(last, scheduled) if last else scheduled
        problem = plan.problem or (rec.problem if rec else None)
        if desc is None and problem is None:
            problem = "no Schedule yet: run `xnovu rules sync` (or wait for the next sync)"
        out.append(
            RuleInfo(
                rule.id, rule.name, rule.trigger_type, plan.cron, plan.timezone, state, next_fire, last, problem, note
            )
        )
    return out


async def trigger_rule(
    client: Client,
    repo: RuleRepository,
    task_queue: str,
    rule_id: int,
    at: datetime | None = None,
    *,
    timeout_s: float = 60.0,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> FireResult:
    """Fire a rule now (or for time `at`) through FireRuleWorkflow, with the same dedup as a scheduled fire.

    Without `at`, the fire is for the current minute: a manual trigger in the minute a Schedule also fires makes
    one notification, not two (cron fires are whole minutes).
    """
    rule = await repo.get(rule_id)
    if rule is None:
        raise XnovuError(f"rule {rule_id} does not exist")
    when = fire_time(at) if at is not None else fire_time(now()).replace(second=0)
    wid = fire_workflow_id(rule_id, when)
    try:
        handle = await client.start_workflow(
            FIRE_WORKFLOW,
            FireRequest(rule_id, when),
            id=wid,
            task_queue=task_queue,
            execution_timeout=FIRE_EXECUTION_TIMEOUT,
            id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
            memo={RULE_MEMO: rule.name},
            search_attributes=searchattrs.for_rule(rule_id, rule.enterprise_id),
            result_type=FireResult,
        )
    except WorkflowAlreadyStartedError:
        handle = client.get_workflow_handle(wid, result_type=FireResult)
    try:
        return await asyncio.wait_for(handle.result(), timeout_s)
    except TimeoutError:
        raise XnovuError(
            f"started {wid}, but no worker finished it within {timeout_s:.0f} s; is `xnovu worker start` running?"
        ) from None
