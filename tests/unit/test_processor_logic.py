"""The pure decisions of the trigger core: backoff (README "Configuration"), what must never be sent (I1), poison
rows (I5)."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from xnovu.db.repository import NotificationRow
from xnovu.service.processor import (
    EVENT_OVERHEAD_BYTES,
    MAX_PAYLOAD_BYTES,
    event_size_bytes,
    malformed_reason,
    notification_block_reason,
    retry_delay_ms,
    unique_recipients,
    workflow_block_reason,
    workflow_hold_reason,
)

NOW = datetime(2025, 6, 1, 12, 0, 0, tzinfo=UTC)
ALICE = "2b1f0f5e-6a55-4a0e-9b43-2d2b7f1c9a01"
BOB = "7d0e3c1a-1f2b-4c3d-8e9f-0a1b2c3d4e5f"
CAROL = "c0ffee00-0000-4000-8000-000000000003"


def make_row(**changes: Any) -> NotificationRow:
    """A sendable notification (published, active, due, valid) with `changes` applied."""
    row = NotificationRow(
        id=42,
        name="Welcome",
        publish_status="PUBLISH",
        deactivated=False,
        status="PENDING",
        payload={"firstName": "Ada"},
        recipients=[ALICE, BOB],
        overrides=None,
        scheduled_for=None,
        attempts=0,
        next_attempt_at=None,
        dead_lettered_at=None,
        enterprise_id=None,
        retraction_reason=None,
        error_details=None,
        workflow_key="welcome-email",
        workflow_publish_status="PUBLISH",
        workflow_deactivated=False,
        default_channels=["EMAIL"],
    )
    return dataclasses.replace(row, **changes)


def payload_of_size(size: int, char: str = "x") -> dict[str, str]:
    """A payload whose event, measured as malformed_reason measures it (event_size_bytes), is exactly `size` bytes."""
    overhead = event_size_bytes(make_row(payload={"k": ""}))
    per_char = len(char.encode())
    count, rest = divmod(size - overhead, per_char)
    payload = {"k": char * count + "x" * rest}
    assert event_size_bytes(make_row(payload=payload)) == size
    return payload


# -- retry_delay_ms ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("attempt", "expected"), [(1, 1000), (2, 2000), (3, 4000), (4, 8000), (5, 16000)])
def test_retry_delay_doubles_per_attempt(attempt: int, expected: int) -> None:
    assert retry_delay_ms(attempt, base_ms=1000, max_ms=1_000_000) == expected


def test_retry_delay_is_capped_at_the_maximum() -> None:
    assert retry_delay_ms(6, base_ms=1000, max_ms=20_000) == 20_000
    assert retry_delay_ms(50, base_ms=1000, max_ms=20_000) == 20_000


def test_retry_delay_with_spec_defaults() -> None:
    """RETRY_BACKOFF_BASE_MS=60000, RETRY_BACKOFF_MAX_MS=3600000: 1, 2, 4, 8, 16, 32 min, then the 1 h cap."""
    delays = [retry_delay_ms(a, 60_000, 3_600_000) for a in range(1, 9)]
    assert delays == [60_000, 120_000, 240_000, 480_000, 960_000, 1_920_000, 3_600_000, 3_600_000]


@pytest.mark.parametrize("attempt", [0, -1, -1000])
def test_retry_delay_before_the_first_attempt_is_the_base(attempt: int) -> None:
    assert retry_delay_ms(attempt, base_ms=1500, max_ms=60_000) == 1500


@pytest.mark.parametrize("attempt", [63, 64, 1025, 10**9, 2**63])
def test_retry_delay_for_a_huge_attempt_is_the_cap_and_a_plain_int(attempt: int) -> None:
    delay = retry_delay_ms(attempt, base_ms=60_000, max_ms=3_600_000)
    assert delay == 3_600_000
    assert type(delay) is int


def test_retry_delay_never_decreases() -> None:
    delays = [retry_delay_ms(a, 250, 90_000) for a in range(1, 200)]
    assert delays == sorted(delays)
    assert all(0 < d <= 90_000 for d in delays)


def test_retry_delay_with_zero_base_retries_immediately() -> None:
    assert retry_delay_ms(5, base_ms=0, max_ms=3_600_000) == 0


# -- notification_block_reason (I1) --------------------------------------------------------------------------


def test_published_active_due_notification_is_not_blocked() -> None:
    assert notification_block_reason(make_row(), NOW) is None


def test_retracted_with_reason_is_blocked_and_says_why() -> None:
    reason = notification_block_reason(make_row(status="RETRACTED", retraction_reason="sent by mistake"), NOW)
    assert reason is not None
    assert "42" in reason
    assert "retracted" in reason
    assert "sent by mistake" in reason


def test_retracted_without_reason_is_blocked() -> None:
    reason = notification_block_reason(make_row(status="RETRACTED", retraction_reason=None), NOW)
    assert reason is not None
    assert reason.endswith("retracted")


def test_retracted_wins_over_every_other_reason() -> None:
    row = make_row(status="RETRACTED", publish_status="DRAFT", deactivated=True, scheduled_for=NOW + timedelta(days=1))
    reason = notification_block_reason(row, NOW)
    assert reason is not None
    assert "retracted" in reason


@pytest.mark.parametrize("publish_status", ["DRAFT", "DISCARD", "DELETED", "NONE"])
def test_unpublished_notification_is_blocked(publish_status: str) -> None:
    reason = notification_block_reason(make_row(publish_status=publish_status), NOW)
    assert reason is not None
    assert publish_status in reason
    assert "PUBLISH" in reason


def test_deactivated_notification_is_blocked() -> None:
    reason = notification_block_reason(make_row(deactivated=True), NOW)
    assert reason is not None
    assert "deactivated" in reason


def test_null_deactivated_counts_as_active() -> None:
    assert notification_block_reason(make_row(deactivated=None), NOW) is None


@pytest.mark.parametrize("ahead", [timedelta(seconds=3), timedelta(minutes=5), timedelta(days=30)])
def test_notification_scheduled_beyond_tolerance_is_blocked(ahead: timedelta) -> None:
    when = NOW + ahead
    reason = notification_block_reason(make_row(scheduled_for=when), NOW)
    assert reason is not None
    assert when.isoformat() in reason


@pytest.mark.parametrize(
    "ahead",
    [timedelta(seconds=2), timedelta(seconds=1), timedelta(milliseconds=1), timedelta(0), -timedelta(hours=1)],
)
def test_notification_due_within_two_seconds_or_past_is_sent(ahead: timedelta) -> None:
    assert notification_block_reason(make_row(scheduled_for=NOW + ahead), NOW) is None


@pytest.mark.parametrize("status", ["PENDING", "PROCESSING", "FAILED"])
def test_status_other_than_retracted_does_not_block_a_published_row(status: str) -> None:
    assert notification_block_reason(make_row(status=status), NOW) is None


# -- workflow_block_reason (I1) ------------------------------------------------------------------------------


def test_missing_workflow_is_blocked() -> None:
    row = make_row(workflow_key=None, workflow_publish_status=None, workflow_deactivated=None)
    reason = workflow_block_reason(row)
    assert reason is not None
    assert "does not exist" in reason


@pytest.mark.parametrize("publish_status", ["DISCARD", "DELETED", None])
def test_discarded_or_deleted_workflow_is_blocked_for_good(publish_status: str | None) -> None:
    row = make_row(workflow_publish_status=publish_status)
    reason = workflow_block_reason(row)
    assert reason is not None
    assert "welcome-email" in reason
    assert str(publish_status) in reason
    assert workflow_hold_reason(row) is None


@pytest.mark.parametrize("publish_status", ["DRAFT", "NONE"])
def test_draft_workflow_holds_its_notifications_back(publish_status: str) -> None:
    row = make_row(workflow_publish_status=publish_status)
    assert workflow_block_reason(row) is None, "not dead-lettered"
    reason = workflow_hold_reason(row)
    assert reason is not None and "welcome-email" in reason and publish_status in reason


def test_deactivated_workflow_holds_its_notifications_back() -> None:
    row = make_row(workflow_deactivated=True)
    assert workflow_block_reason(row) is None
    reason = workflow_hold_reason(row)
    assert reason is not None
    assert "welcome-email" in reason
    assert "deactivated" in reason


@pytest.mark.parametrize("deactivated", [False, None])
def test_published_active_workflow_is_not_blocked(deactivated: bool | None) -> None:
    assert workflow_block_reason(make_row(workflow_deactivated=deactivated)) is None


# -- malformed_reason (I5) -----------------------------------------------------------------------------------


def test_valid_row_is_not_malformed() -> None:
    assert malformed_reason(make_row()) is None


@pytest.mark.parametrize(
    ("payload", "type_name"),
    [
        ([1, 2], "an array"),
        ("hello", "a string"),
        (3, "a number"),
        (2.5, "a number"),
        (None, "null"),
        (True, "a boolean"),
    ],
)
def test_payload_that_is_not_an_object_is_malformed(payload: Any, type_name: str) -> None:
    reason = malformed_reason(make_row(payload=payload))
    assert reason is not None
    assert "payload" in reason
    assert type_name in reason


def test_empty_object_payload_is_fine() -> None:
    assert malformed_reason(make_row(payload={})) is None


@pytest.mark.parametrize(
    ("overrides", "type_name"), [([], "an array"), ("email", "a string"), (1, "a number"), (False, "a boolean")]
)
def test_overrides_that_are_not_an_object_are_malformed(overrides: Any, type_name: str) -> None:
    reason = malformed_reason(make_row(overrides=overrides))
    assert reason is not None
    assert "overrides" in reason
    assert type_name in reason


@pytest.mark.parametrize("overrides", [None, {}, {"email": {"from": "team@example.com"}}])
def test_null_or_object_overrides_are_fine(overrides: Any) -> None:
    assert malformed_reason(make_row(overrides=overrides)) is None


def test_empty_recipients_is_malformed() -> None:
    reason = malformed_reason(make_row(recipients=[]))
    assert reason is not None
    assert "empty" in reason


@pytest.mark.parametrize("recipients", [[None], [ALICE, None], [None, BOB, ALICE]])
def test_null_recipient_is_malformed(recipients: list[str | None]) -> None:
    reason = malformed_reason(make_row(recipients=recipients))
    assert reason is not None
    assert "null" in reason


def test_payload_exactly_at_the_limit_is_fine() -> None:
    assert malformed_reason(make_row(payload=payload_of_size(MAX_PAYLOAD_BYTES))) is None


def test_payload_one_byte_over_the_limit_is_malformed() -> None:
    reason = malformed_reason(make_row(payload=payload_of_size(MAX_PAYLOAD_BYTES + 1)))
    assert reason is not None
    assert str(MAX_PAYLOAD_BYTES + 1) in reason
    assert "512 KB" in reason


def test_limit_is_512_kib() -> None:
    assert MAX_PAYLOAD_BYTES == 512 * 1024


def test_payload_size_counts_utf8_bytes_not_characters() -> None:
    payload = payload_of_size(MAX_PAYLOAD_BYTES + 2, char="é")  # 2 bytes per character
    characters = len(json.dumps(payload, ensure_ascii=False)) + EVENT_OVERHEAD_BYTES + 60
    assert characters < MAX_PAYLOAD_BYTES  # under the limit if characters were counted
    reason = malformed_reason(make_row(payload=payload))
    assert reason is not None
    assert str(MAX_PAYLOAD_BYTES + 2) in reason


def test_multibyte_payload_exactly_at_the_limit_is_fine() -> None:
    payload = payload_of_size(MAX_PAYLOAD_BYTES, char="😀")  # 4 bytes per character
    assert malformed_reason(make_row(payload=payload)) is None


# -- unique_recipients ---------------------------------------------------------------------------------------


def test_unique_recipients_keeps_first_occurrence_order() -> None:
    assert unique_recipients([BOB, ALICE, BOB, CAROL, ALICE]) == [BOB, ALICE, CAROL]


def test_unique_recipients_drops_nulls() -> None:
    assert unique_recipients([None, ALICE, None, BOB]) == [ALICE, BOB]


def test_unique_recipients_of_nothing_is_empty() -> None:
    assert unique_recipients([]) == []
    assert unique_recipients([None]) == []


def test_unique_recipients_does_not_mutate_the_row() -> None:
    recipients: list[str | None] = [ALICE, ALICE]
    assert unique_recipients(recipients) == [ALICE]
    assert recipients == [ALICE, ALICE]
