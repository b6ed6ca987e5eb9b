"""Rule checks, names and DST handling (README "Rules"): pure logic, no I/O."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from temporalio.client import ScheduleActionStartWorkflow

from xnovu.config import Settings
from xnovu.core.rules import (
    ACTIVE_NOTE,
    SYNC_NOTE_PREFIX,
    Rule,
    check_cron,
    check_timezone,
    cron_sets,
    dst_gap_fires,
    fire_content,
    fire_time,
    fire_workflow_id,
    notification_name,
    parse_config,
    parse_rule_schedule_id,
    plan_rule,
    rule_schedule_id,
    why_not_fire,
)
from xnovu.temporal import searchattrs
from xnovu.temporal.rules import desired_rule_schedule, rule_schedule_config
from xnovu.temporal.schedules import RULES_SYNC_ID, parse_schedule

R1 = str(uuid.uuid4())


def rule(**changes: Any) -> Rule:
    values: dict[str, Any] = {
        "id": 7,
        "name": "weekly digest",
        "publish_status": "PUBLISH",
        "deactivated": False,
        "trigger_type": "CRON",
        "trigger_config": {"cron": "0 9 * * MON", "timezone": "Europe/Berlin"},
        "rule_payload": {"recipients": [R1], "payload": {"a": 1}},
        "workflow_id": 3,
        "workflow_key": "digest",
        "workflow_publish_status": "PUBLISH",
        "workflow_deactivated": False,
    }
    values.update(changes)
    return Rule(**values)


@pytest.mark.parametrize(
    "cron", ["0 9 * * MON", "*/15 * * * *", "0 9-17/2 1,15 JAN-MAR mon-fri", "30 2 * * *", "@daily", "0 0 * * 7"]
)
def test_valid_cron_expressions_pass(cron: str) -> None:
    assert check_cron(cron) is None


@pytest.mark.parametrize(
    ("cron", "words"),
    [
        ("61 9 * * *", "minute field '61': 61 is outside 0-59"),
        ("0 24 * * *", "hour field"),
        ("0 9 * *", "has 4 fields; expected 5"),
        ("0 9 * * FUNDAY", "'FUNDAY' is not a number or a name"),
        ("0 9 * * */0", "step '0' must be a positive number"),
        ("0 9 5-1 * *", "runs backwards"),
        ("@fortnightly", "unknown cron macro"),
        ("CRON_TZ=Europe/Berlin 0 9 * * *", "trigger_config.timezone"),
        ("", "empty"),
    ],
)
def test_invalid_cron_expressions_say_what_is_wrong(cron: str, words: str) -> None:
    reason = check_cron(cron)
    assert reason is not None and words in reason and "\n" not in reason


def test_timezones_must_be_iana_names() -> None:
    assert check_timezone("Europe/Berlin") is None and check_timezone("UTC") is None
    for bad in ("Mars/Olympus", "", " Europe/Berlin", "../etc/passwd"):
        assert check_timezone(bad) is not None, bad


@pytest.mark.parametrize(
    ("config", "words"),
    [
        ("0 9 * * *", "must be an object"),
        (None, "must be an object"),
        ({"cron": "0 9 * * *", "interval": 5}, "unknown trigger_config key(s) interval"),
        ({"timezone": "UTC"}, "trigger_config.cron must be"),
        ({"cron": "0 9 * * *", "timezone": 5}, "timezone must be"),
    ],
)
def test_unknown_or_malformed_trigger_config_is_a_problem(config: Any, words: str) -> None:
    problem = parse_config(config)[2]
    assert problem is not None and words in problem


def test_timezone_defaults_to_utc() -> None:
    assert parse_config({"cron": "0 9 * * *"}) == ("0 9 * * *", "UTC", None)


def test_rule_payload_recipients_single_recipient_payload_and_overrides() -> None:
    content, problem = fire_content({"recipient": R1, "payload": {"x": 1}, "overrides": {"email": {}}})
    assert problem is None and content is not None
    assert content.recipients == [R1] and content.payload == {"x": 1} and content.overrides == {"email": {}}
    content, _ = fire_content({"recipients": [R1, R1.upper()]})
    assert content is not None and content.recipients == [R1] and content.payload == {}


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ([R1], "rule_payload must be an object"),
        ({"payload": {}}, "no recipients"),
        ({"recipients": []}, "empty"),
        ({"recipients": R1}, "must be an array"),
        ({"recipients": ["bob"]}, "'bob' is not a subscriber id"),
        ({"recipients": [5]}, "5 is not a subscriber id"),
        ({"recipients": [R1], "payload": "hi"}, "payload must be an object, got str"),
        ({"recipients": [R1], "overrides": [1]}, "overrides must be an object, got array"),
    ],
)
def test_bad_rule_payloads_say_why(body: Any, words: str) -> None:
    content, problem = fire_content(body)
    assert content is None and problem is not None and words in problem, problem


def test_a_good_rule_is_active_with_the_active_note() -> None:
    plan = plan_rule(rule())
    assert plan.active and plan.problem is None and plan.note == ACTIVE_NOTE
    assert (plan.cron, plan.timezone) == ("0 9 * * MON", "Europe/Berlin")
    assert why_not_fire(rule()) is None


@pytest.mark.parametrize(
    ("changes", "reason", "problem"),
    [
        ({"deactivated": True}, "the rule is deactivated", None),
        ({"publish_status": "DRAFT"}, "the rule is DRAFT, not PUBLISH", None),
        ({"workflow_publish_status": "DRAFT"}, "its workflow 'digest' is DRAFT", "its workflow 'digest' is DRAFT"),
        ({"workflow_deactivated": True}, "deactivated", "deactivated"),
        ({"workflow_key": None, "workflow_publish_status": None}, "does not exist", "does not exist"),
        ({"rule_payload": {"payload": {}}}, "no recipients", "no recipients"),
    ],
)
def test_rules_that_must_not_fire_are_paused_with_the_reason(
    changes: dict[str, Any], reason: str, problem: str | None
) -> None:
    plan = plan_rule(rule(**changes))
    assert not plan.active and plan.spec_problem is None
    assert plan.note.startswith(SYNC_NOTE_PREFIX) and reason in plan.note
    assert (plan.problem is None) if problem is None else (problem in (plan.problem or ""))
    assert reason in (why_not_fire(rule(**changes)) or "")


def test_a_bad_spec_is_a_spec_problem_even_when_the_rule_is_also_deactivated() -> None:
    plan = plan_rule(rule(deactivated=True, trigger_config={"cron": "bad"}))
    assert plan.spec_problem and plan.problem == plan.spec_problem and not plan.active


def test_schedule_ids_and_names() -> None:
    assert rule_schedule_id(7) == "xnovu-rule-7"
    assert parse_rule_schedule_id("xnovu-rule-7") == 7
    for other in ("xnovu-rule-7-backup", "xnovu-rule-", "xnovu-rule-07", "xnovu-rules-sync", "xnovu-poll-new"):
        assert parse_rule_schedule_id(other) is None, other
    at = datetime(2026, 3, 2, 9, 0, 0, 123456, tzinfo=ZoneInfo("Europe/Berlin"))
    assert fire_time(at) == datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
    assert fire_workflow_id(7, at) == "xnovu-rule-7-fire-2026-03-02T08:00:00Z"
    assert notification_name(rule(), at) == "weekly digest (rule 7 @ 2026-03-02T08:00:00Z)"
    assert notification_name(rule(), at) != notification_name(rule(), at + timedelta(days=7))


def test_schedule_names_accept_rule_schedules_and_the_rules_sync() -> None:
    assert parse_schedule("xnovu-rule-12") == "xnovu-rule-12"
    assert parse_schedule("rules-sync") == RULES_SYNC_ID == parse_schedule("xnovu-rules-sync")


def test_cron_fields_expand_like_cron() -> None:
    minute, hour, dom, month, dow = cron_sets("5/20 9-17/4 1,15 JAN-MAR SUN,7")
    assert minute == {5, 25, 45} and hour == {9, 13, 17} and dom == {1, 15} and month == {1, 2, 3} and dow == {0}
    assert cron_sets("@hourly")[0] == {0} and len(cron_sets("@hourly")[1]) == 24


def test_a_fire_the_clocks_jump_over_is_made_just_after_the_jump() -> None:
    start = datetime(2026, 12, 1, tzinfo=UTC)
    assert dst_gap_fires("30 2 * * *", "Europe/Berlin", start)[:1] == [datetime(2027, 3, 28, 1, 30, tzinfo=UTC)]
    assert dst_gap_fires("0 9 * * *", "Europe/Berlin", start) == []
    assert dst_gap_fires("30 2 * * *", "UTC", start) == []
    assert dst_gap_fires("30 2 * * MON", "Europe/Berlin", start) == [], "the jump is on a Sunday"


def test_desired_rule_schedule_carries_spec_timezone_dst_fires_and_search_attribute() -> None:
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    r = rule(trigger_config={"cron": "30 2 * * *", "timezone": "Europe/Berlin"})
    schedule = desired_rule_schedule(r, plan_rule(r), rule_schedule_config(settings), datetime(2026, 12, 1, tzinfo=UTC))
    assert schedule.spec.cron_expressions == ["30 2 * * *"] and schedule.spec.time_zone_name == "Europe/Berlin"
    [first, *_] = schedule.spec.calendars
    assert (first.year[0].start, first.month[0].start, first.day_of_month[0].start) == (2027, 3, 28)
    assert (first.hour[0].start, first.minute[0].start) == (3, 30)
    assert schedule.policy.catchup_window == timedelta(minutes=5)
    action = schedule.action
    assert isinstance(action, ScheduleActionStartWorkflow) and action.id == "xnovu-rule-7-fire"
    assert action.typed_search_attributes.get(searchattrs.RULE_ID) == 7
    off = rule(deactivated=True)
    paused = desired_rule_schedule(off, plan_rule(off), rule_schedule_config(settings))
    assert paused.state.paused and "deactivated" in (paused.state.note or "")


def test_a_cron_that_fires_after_the_jump_anyway_gets_no_extra_dst_fires() -> None:
    """Every minute (or hour) already fires right after the jump: the Schedule's spec and memo stay small."""
    start = datetime(2027, 1, 1, tzinfo=UTC)
    assert dst_gap_fires("* * * * *", "Europe/Berlin", start) == []
    assert dst_gap_fires("0 * * * *", "Europe/Berlin", start) == []
    assert len(dst_gap_fires("30 2 * * *", "Europe/Berlin", start)) == 2, "one per spring-forward day in the horizon"
