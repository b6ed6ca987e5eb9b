"""Notification rules on a CRON: what a rule row means, checked without I/O (README "Rules").

A rule of `notify.ent_notification_rule` with `trigger_type = 'CRON'` and
`trigger_config = {"cron": "0 9 * * MON", "timezone": "Europe/Berlin"}` gets one Temporal Schedule
`xnovu-rule-{id}`; each fire inserts one notification built from `rule_payload`
(`recipients` or `recipient`, `payload`, `overrides`). Everything here is pure so it can be used by the sync
activity, the fire activity, `xnovu rules list` and unit tests alike.
"""

# No `from __future__ import annotations`: these dataclasses cross Temporal boundaries (see xnovu/core/models.py).
import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

RULE_SCHEDULE_PREFIX = "xnovu-rule-"
_RULE_SCHEDULE_ID = re.compile(r"^xnovu-rule-([1-9][0-9]*)$")

#: Notes xnovu writes on a rule Schedule start with this, so a sync knows which pauses are its own: a Schedule an
#: operator paused (`xnovu schedules pause xnovu-rule-7`) stays paused whatever the rule says.
SYNC_NOTE_PREFIX = "xnovu rules sync: "
ACTIVE_NOTE = SYNC_NOTE_PREFIX + "active; fires per the rule's cron and inserts one notification per fire."

NOT_HANDLED = "not handled: only CRON rules are scheduled"

#: Macros Temporal's cron parser accepts besides five fields.
CRON_MACROS = frozenset({"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"})
_MONTHS = ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"]
_DAYS = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"]
#: (name, lowest, highest, names) of the five cron fields.
_FIELDS: list[tuple[str, int, int, dict[str, int]]] = [
    ("minute", 0, 59, {}),
    ("hour", 0, 23, {}),
    ("day of month", 1, 31, {}),
    ("month", 1, 12, {m: i + 1 for i, m in enumerate(_MONTHS)}),
    ("day of week", 0, 7, {d: i for i, d in enumerate(_DAYS)}),
]
CONFIG_KEYS = frozenset({"cron", "timezone"})


class RuleState(StrEnum):
    """Where a rule stands after a sync (shown by `xnovu rules list` and /status)."""

    ACTIVE = "active"
    """Its Schedule fires."""
    PAUSED = "paused"
    """Its Schedule exists and is paused (deactivated, unpublished, a problem, or an operator's pause)."""
    NONE = "none"
    """No Schedule: its cron or timezone cannot make one (see the problem)."""
    NOT_HANDLED = "not handled"
    """Not a CRON rule: left alone."""


@dataclass(frozen=True)
class Rule:
    """A rule row joined with its Novu workflow (workflow fields are None when the workflow is missing)."""

    id: int
    name: str
    publish_status: str
    deactivated: bool | None
    trigger_type: str
    trigger_config: Any
    rule_payload: Any
    enterprise_id: str | None = None
    business_id: str | None = None
    workflow_id: int | None = None
    workflow_key: str | None = None
    workflow_publish_status: str | None = None
    workflow_deactivated: bool | None = None


@dataclass(frozen=True)
class RulePlan:
    """What a sync should make of one CRON rule."""

    rule_id: int
    cron: str | None
    timezone: str
    spec_problem: str | None = None
    """The cron/timezone/config cannot make a Schedule: none is created, an existing one is paused."""
    pause_reason: str | None = None
    """The Schedule must not fire now (deactivated, unpublished, bad payload, workflow unpublished)."""
    problem: str | None = None
    """What an operator must fix (None when the rule is fine, even if deliberately deactivated)."""

    @property
    def active(self) -> bool:
        return self.spec_problem is None and self.pause_reason is None

    @property
    def note(self) -> str:
        """The Schedule note that says why it is in its state."""
        reason = self.spec_problem or self.pause_reason
        return f"{SYNC_NOTE_PREFIX}paused: {reason}" if reason else ACTIVE_NOTE


@dataclass(frozen=True)
class FireContent:
    """The notification a fire inserts (validated)."""

    recipients: list[str]
    payload: dict[str, Any]
    overrides: dict[str, Any] | None = None


@dataclass(frozen=True)
class FireRequest:
    """Input of FireRuleWorkflow and of the fire_rule activity."""

    rule_id: int
    scheduled_time: datetime | None = None
    """The fire's time; None = the Schedule's `TemporalScheduledStartTime` (set by the workflow)."""


@dataclass(frozen=True)
class FireResult:
    """What one fire did: inserted a notification, found the one inserted earlier for that time, or skipped."""

    rule_id: int
    scheduled_time: datetime
    notification_id: int | None = None
    created: bool = False
    reason: str | None = None
    """Why nothing was inserted (the rule is deactivated, deleted, has a problem…)."""


@dataclass(frozen=True)
class SyncReport:
    """What one reconcile did, per rule id."""

    created: list[int] = field(default_factory=list)
    updated: list[int] = field(default_factory=list)
    paused: list[int] = field(default_factory=list)
    resumed: list[int] = field(default_factory=list)
    deleted: list[int] = field(default_factory=list)
    unchanged: list[int] = field(default_factory=list)
    problems: dict[str, str] = field(default_factory=dict)
    """rule id (as text: JSON object keys) → problem."""


# -- names -----------------------------------------------------------------------------------------------------


def rule_schedule_id(rule_id: int) -> str:
    return f"{RULE_SCHEDULE_PREFIX}{rule_id}"


def parse_rule_schedule_id(schedule_id: str) -> int | None:
    """`xnovu-rule-7` → 7; None for any other id (nothing else in the namespace is a rule Schedule)."""
    match = _RULE_SCHEDULE_ID.match(schedule_id)
    return int(match.group(1)) if match else None


def fire_time(value: datetime) -> datetime:
    """A fire's time as its dedup key: UTC, whole seconds (Temporal's own resolution for scheduled times)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).replace(microsecond=0)


def fire_stamp(value: datetime) -> str:
    """RFC 3339 UTC with a Z, as Temporal appends it to the workflow id of a scheduled start."""
    return fire_time(value).strftime("%Y-%m-%dT%H:%M:%SZ")


def fire_workflow_prefix(rule_id: int) -> str:
    """The Schedule action's workflow id; Temporal appends `-{scheduled time}` to it on every fire."""
    return f"{rule_schedule_id(rule_id)}-fire"


def fire_workflow_id(rule_id: int, scheduled_time: datetime) -> str:
    """The id a fire of this rule at this time runs under, whether the Schedule or `xnovu rules trigger` starts it."""
    return f"{fire_workflow_prefix(rule_id)}-{fire_stamp(scheduled_time)}"


def notification_name(rule: Rule, scheduled_time: datetime) -> str:
    """Carries the rule and the fire time, so `unique (name, enterprise_id)` holds across fires."""
    return f"{rule.name} (rule {rule.id} @ {fire_stamp(scheduled_time)})"


# -- checks ----------------------------------------------------------------------------------------------------


def check_cron(expression: str) -> str | None:
    """None if `expression` is a five-field cron (or a macro) Temporal accepts, else a readable reason."""
    text = expression.strip()
    if not text:
        return "the cron expression is empty"
    if text.startswith("@"):
        if text.lower() in CRON_MACROS:
            return None
        return f"unknown cron macro {text!r} (use one of {', '.join(sorted(CRON_MACROS))})"
    if "TZ=" in text.upper():
        return "put the time zone in trigger_config.timezone, not in the cron expression"
    parts = text.split()
    if len(parts) != 5:
        return f"the cron expression {text!r} has {len(parts)} fields; expected 5 (minute hour day month weekday)"
    for part, (name, low, high, names) in zip(parts, _FIELDS, strict=True):
        reason = _check_field(part, low, high, names)
        if reason:
            return f"invalid cron {text!r}: {name} field {part!r}: {reason}"
    return None


def _check_field(part: str, low: int, high: int, names: dict[str, int]) -> str | None:
    for item in part.split(","):
        base, slash, step = item.partition("/")
        if slash and (not step.isdigit() or int(step) == 0):
            return f"step {step!r} must be a positive number"
        if base in ("*", "?"):
            continue
        bounds = base.split("-")
        if len(bounds) > 2 or not all(bounds):
            return f"{item!r} is not a value, range or list"
        values: list[int] = []
        for b in bounds:
            value = names.get(b.upper()) if not b.isdigit() else int(b)
            if value is None:
                return f"{b!r} is not a number" + (f" or a name ({', '.join(names)})" if names else "")
            if not low <= value <= high:
                return f"{value} is outside {low}-{high}"
            values.append(value)
        if len(values) == 2 and values[0] > values[1]:
            return f"range {base!r} runs backwards"
    return None


_MACRO_FIELDS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}


def cron_sets(expression: str) -> list[frozenset[int]]:
    """The values each of the five fields matches (day of week 7 is 0); the expression must pass check_cron."""
    text = _MACRO_FIELDS.get(expression.strip().lower(), expression.strip())
    out: list[frozenset[int]] = []
    for part, (_, low, high, names) in zip(text.split(), _FIELDS, strict=True):
        values: set[int] = set()
        for item in part.split(","):
            base, _, step_text = item.partition("/")
            step = int(step_text) if step_text else 1
            if base in ("*", "?"):
                first, last = low, high
            else:
                bounds = [names[b.upper()] if not b.isdigit() else int(b) for b in base.split("-")]
                first = bounds[0]
                # "5/20" means from 5 to the end in steps of 20, as in cron.
                last = bounds[1] if len(bounds) == 2 else (high if step_text else first)
            values.update(range(first, last + 1, step))
        out.append(frozenset(v % 7 for v in values) if low == 0 and high == 7 else frozenset(values))
    return out


def _matches(sets: list[frozenset[int]], wall: datetime) -> bool:
    """Every field matches (Temporal's calendar semantics); weekday 0 = Sunday as in cron."""
    minute, hour, dom, month, dow = sets
    weekday = (wall.weekday() + 1) % 7
    return wall.minute in minute and wall.hour in hour and wall.day in dom and wall.month in month and weekday in dow


def dst_gap_fires(cron: str, timezone: str, start: datetime, days: int = 800) -> list[datetime]:
    """Fires whose local time does not exist (the clocks jump over it), as the instants just past the jump.

    Temporal skips such a time: a rule at 02:30 Europe/Berlin would not fire at all on the last Sunday of March.
    Like cron, xnovu fires it once the clocks have jumped (02:30 → 03:30 CEST); the sync adds these instants to
    the rule's Schedule (a horizon of about two years, recomputed on every sync). Returned in UTC, sorted.
    """
    zone = ZoneInfo(timezone)
    sets = cron_sets(cron)
    fires: set[datetime] = set()
    minutes, hours = sorted(sets[0]), sorted(sets[1])
    for day in _jump_days(timezone, start.astimezone(zone).date().toordinal(), days):
        midnight = datetime.fromordinal(day).replace(tzinfo=zone)
        if not _matches(sets, midnight.replace(hour=hours[0], minute=minutes[0])):
            continue  # the cron does not fire on this day at all
        for hour in hours:
            for minute in minutes:
                wall = midnight.replace(hour=hour, minute=minute)
                instant = wall.astimezone(UTC)
                if instant.astimezone(zone).replace(tzinfo=None) == wall.replace(tzinfo=None):
                    continue  # this wall time exists
                if _matches(sets, instant.astimezone(zone)):
                    continue  # the cron fires at that instant anyway (e.g. every minute): nothing to add
                if instant > start:
                    fires.add(instant)
    return sorted(fires)


@lru_cache(maxsize=256)
def _jump_days(timezone: str, first_day: int, days: int) -> tuple[int, ...]:
    """Ordinals of the days in the window on which the clocks jump forward (cached: a sync asks once per rule)."""
    zone = ZoneInfo(timezone)
    out = []
    for day in range(first_day, first_day + days):
        before = datetime.fromordinal(day).replace(tzinfo=zone).utcoffset()
        after = datetime.fromordinal(day + 1).replace(tzinfo=zone).utcoffset()
        if before is not None and after is not None and after > before:
            out.append(day)
    return tuple(out)


def check_timezone(name: str) -> str | None:
    """None if `name` is an IANA time zone, else a readable reason."""
    if not name.strip() or name != name.strip():
        return f"time zone {name!r} is not an IANA name such as Europe/Berlin"
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return f"unknown time zone {name!r}; use an IANA name such as Europe/Berlin or UTC"
    return None


def parse_config(config: Any) -> tuple[str | None, str, str | None]:
    """(cron, timezone, problem) from `trigger_config`; the timezone defaults to UTC."""
    if not isinstance(config, dict):
        return None, "UTC", f'trigger_config must be an object like {{"cron": "0 9 * * MON"}}, got {_kind(config)}'
    unknown = sorted(set(config) - CONFIG_KEYS)
    if unknown:
        return None, "UTC", f"unknown trigger_config key(s) {', '.join(unknown)}; a CRON rule takes cron and timezone"
    cron = config.get("cron")
    if not isinstance(cron, str):
        return None, "UTC", 'trigger_config.cron must be a cron expression string such as "0 9 * * MON"'
    timezone = config.get("timezone", "UTC")
    if timezone is None:
        timezone = "UTC"
    if not isinstance(timezone, str):
        return cron, "UTC", "trigger_config.timezone must be an IANA time zone name such as Europe/Berlin"
    problem = check_cron(cron) or check_timezone(timezone)
    return cron.strip(), timezone, problem


def fire_content(rule_payload: Any) -> tuple[FireContent | None, str | None]:
    """The notification a fire inserts, or the reason the rule payload cannot make one."""
    if not isinstance(rule_payload, dict):
        return None, f"rule_payload must be an object with recipients and payload, got {_kind(rule_payload)}"
    if "recipients" in rule_payload:
        raw = rule_payload["recipients"]
        if not isinstance(raw, list):
            return None, f"rule_payload.recipients must be an array of subscriber ids, got {_kind(raw)}"
    elif "recipient" in rule_payload:
        raw = [rule_payload["recipient"]]
    else:
        return None, "rule_payload has no recipients (set recipients: [...] or recipient)"
    if not raw:
        return None, "rule_payload.recipients is empty"
    recipients: list[str] = []
    for r in raw:
        try:
            if not isinstance(r, str):
                raise ValueError(r)
            recipients.append(str(uuid.UUID(r)))
        except ValueError:
            return None, f"recipient {r!r} is not a subscriber id (UUID)"
    payload = rule_payload.get("payload", {})
    if not isinstance(payload, dict):
        return None, f"rule_payload.payload must be an object, got {_kind(payload)}"
    overrides = rule_payload.get("overrides")
    if overrides is not None and not isinstance(overrides, dict):
        return None, f"rule_payload.overrides must be an object, got {_kind(overrides)}"
    return FireContent(list(dict.fromkeys(recipients)), payload, overrides), None


def pause_reason(rule: Rule) -> str | None:
    """Why a rule deliberately does not fire now (not a problem to fix)."""
    if rule.deactivated:
        return "the rule is deactivated"
    if rule.publish_status != "PUBLISH":
        return f"the rule is {rule.publish_status}, not PUBLISH"
    return None


def workflow_problem(rule: Rule) -> str | None:
    """A fire would make a notification the pipeline must not send (README invariant I1)."""
    if rule.workflow_key is None:
        return f"its workflow {rule.workflow_id} does not exist"
    if rule.workflow_publish_status != "PUBLISH":
        return f"its workflow {rule.workflow_key!r} is {rule.workflow_publish_status}, not PUBLISH"
    if rule.workflow_deactivated:
        return f"its workflow {rule.workflow_key!r} is deactivated"
    return None


def plan_rule(rule: Rule) -> RulePlan:
    """What a sync should make of a CRON rule: spec, whether it fires, and the problem to show."""
    cron, timezone, spec_problem = parse_config(rule.trigger_config)
    deliberate = pause_reason(rule)
    _, content_problem = fire_content(rule.rule_payload)
    problem = spec_problem or content_problem or workflow_problem(rule)
    return RulePlan(
        rule_id=rule.id,
        cron=cron,
        timezone=timezone,
        spec_problem=spec_problem,
        pause_reason=None if spec_problem else (deliberate or problem),
        problem=problem,
    )


def why_not_fire(rule: Rule) -> str | None:
    """Checked again at fire time: the rule may have changed since the last sync."""
    if rule.trigger_type != "CRON":
        return f"rule {rule.id} is no longer a CRON rule"
    plan = plan_rule(rule)
    reason = plan.spec_problem or plan.pause_reason
    return f"rule {rule.id} does not fire: {reason}" if reason else None


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__.replace("dict", "object").replace("list", "array")
