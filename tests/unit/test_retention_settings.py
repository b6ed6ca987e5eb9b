"""Retention's settings, policy and Schedule (docs/retention.md, README "Configuration")."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from temporalio.client import ScheduleActionStartWorkflow, ScheduleOverlapPolicy

from xnovu.config import Settings, load_settings
from xnovu.core.retention import PruneStepInput
from xnovu.db.retention import RetentionPolicy
from xnovu.errors import ConfigError
from xnovu.temporal.schedules import (
    RETENTION_ID,
    RETENTION_INTERVAL,
    SYSTEM_SCHEDULES,
    desired_retention_schedule,
    parse_schedule,
)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)
    monkeypatch.chdir(tmp_path)


def error(monkeypatch: pytest.MonkeyPatch, **env: str) -> str:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    return str(info.value)


def test_defaults_keep_thirty_days_and_never_delete_notifications() -> None:
    s = load_settings()
    assert s.retention_days == 30 and s.retention_notification_days is None
    policy = RetentionPolicy.from_settings(s)
    assert policy.days == 30 and policy.notification_days is None


@pytest.mark.parametrize("value", ["0", "-3", "36501", "thirty", "1.5"])
def test_a_bad_retention_days_is_one_line_naming_the_variable(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    message = error(monkeypatch, RETENTION_DAYS=value)
    assert message.startswith("RETENTION_DAYS: ") and repr(value) in message and "\n" not in message, message


def test_notifications_are_never_deleted_before_their_ledger(monkeypatch: pytest.MonkeyPatch) -> None:
    message = error(monkeypatch, RETENTION_DAYS="30", RETENTION_NOTIFICATION_DAYS="10")
    assert "RETENTION_NOTIFICATION_DAYS (10) must not be less than RETENTION_DAYS (30)" in message, message


def test_rule_fires_are_kept_for_as_long_as_a_missed_fire_may_be_made_up(monkeypatch: pytest.MonkeyPatch) -> None:
    message = error(monkeypatch, RETENTION_DAYS="1", RULES_CATCHUP_WINDOW_MS=str(2 * 86_400_000))
    assert "RETENTION_DAYS (1) must cover RULES_CATCHUP_WINDOW_MS" in message, message


def test_an_empty_notification_retention_means_keep_them(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RETENTION_NOTIFICATION_DAYS", "")
    assert load_settings().retention_notification_days is None


def test_the_policy_takes_the_notification_window_from_settings_or_the_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RETENTION_DAYS", "7")
    s = load_settings()
    assert RetentionPolicy.from_settings(s).notification_days is None
    # `xnovu db prune --notifications` without RETENTION_NOTIFICATION_DAYS: the notifications of RETENTION_DAYS.
    assert RetentionPolicy.from_settings(s, notifications=True).notification_days == 7
    monkeypatch.setenv("RETENTION_NOTIFICATION_DAYS", "90")
    s = load_settings()
    assert RetentionPolicy.from_settings(s).notification_days == 90, "the schedule deletes them when set"
    assert RetentionPolicy.from_settings(s, notifications=False).notification_days is None


def test_the_retention_schedule_runs_hourly_never_twice_at_once_and_is_one_of_xnovus() -> None:
    s = load_settings()
    schedule = desired_retention_schedule(s)
    action = schedule.action
    assert isinstance(action, ScheduleActionStartWorkflow)
    assert action.workflow == "PruneRetentionWorkflow" and action.id == RETENTION_ID == "xnovu-retention"
    assert list(action.args) == [PruneStepInput()]
    assert action.execution_timeout is None and action.run_timeout is not None
    assert [i.every for i in schedule.spec.intervals] == [RETENTION_INTERVAL] == [timedelta(hours=1)]
    assert schedule.policy.overlap == ScheduleOverlapPolicy.SKIP
    assert "RETENTION_DAYS" in (schedule.state.note or "")
    assert RETENTION_ID in SYSTEM_SCHEDULES, "`schedules pause --all` and bootstrap cover it"
    assert parse_schedule("retention") == parse_schedule("xnovu-retention") == RETENTION_ID
