"""Frozen dataclasses that cross Temporal boundaries (workflow inputs, activity inputs and results).

Fields added later get defaults so that histories written by an older version still decode.
"""

# No `from __future__ import annotations` here: with real (not string) annotations Temporal's data converter
# decodes these classes about twice as fast, and the poll workflow decodes one ClaimBatch per batch.
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum


class PollKind(StrEnum):
    """The three polls, one Temporal Schedule each."""

    NEW = "new"
    FAILED = "failed"
    SCHEDULED = "scheduled"


class Outcome(StrEnum):
    """What one trigger attempt did with a notification."""

    SENT = "sent"
    """Every recipient acknowledged by Novu; row SENT."""
    RETRY = "retry"
    """Some recipients failed transiently; row FAILED with next_attempt_at."""
    DEAD_LETTERED = "dead_lettered"
    """Permanent rejection or attempts exhausted; row FAILED with dead_lettered_at."""
    REJECTED = "rejected"
    """Must not be sent (I1); no Novu call. The reason says why."""
    SKIPPED = "skipped"
    """Nothing to do: already sent, or another attempt owns the row (I4)."""


@dataclass(frozen=True)
class ClaimedNotification:
    """A row a poll claimed (now PROCESSING at `attempt`), with what its child workflow needs."""

    notification_id: int
    attempt: int
    name: str = ""
    workflow_key: str | None = None
    enterprise_id: str | None = None
    scheduled_for: datetime | None = None


@dataclass(frozen=True)
class ClaimBatch:
    """Result of one claim activity."""

    rows: list[ClaimedNotification]
    batch_size: int
    """The limit asked for: a full batch means more rows may be waiting."""


@dataclass(frozen=True)
class PollInput:
    """Input of PollNotificationsWorkflow."""

    kind: PollKind
    batches_before: int = 0
    """Batches drained by earlier runs of this chain (continue-as-new)."""


@dataclass(frozen=True)
class PollResult:
    """What one poll run did."""

    kind: PollKind
    claimed: int = 0
    started: int = 0
    already_running: int = 0
    batches: int = 0


@dataclass(frozen=True)
class NotificationInput:
    """Input of NotificationTriggerWorkflow: one notification, one attempt."""

    notification_id: int
    attempt: int | None = None
    """The attempt this workflow owns (its id is notification-{id}-a{attempt}); None = take the next one."""
    scheduled_for: datetime | None = None
    """Wait on a durable timer until then before sending."""


@dataclass(frozen=True)
class TriggerRequest:
    """Input of the trigger_notification_by_id activity."""

    notification_id: int
    attempt: int | None = None


@dataclass(frozen=True)
class MultipleTriggerRequest:
    """Input of TriggerMultipleNotificationsWorkflow and its activity."""

    notification_ids: list[int]
    concurrency: int | None = None
    """None = TRIGGER_CONCURRENCY of the worker."""


@dataclass(frozen=True)
class RecipientResult:
    """Seed-compatible per-recipient entry of error_details.results."""

    recipient_id: str
    success: bool
    transaction_id: str | None = None
    error: str | None = None


@dataclass(frozen=True)
class TriggerResult:
    """What happened to one notification in one trigger attempt."""

    notification_id: int
    outcome: Outcome
    notification_status: str | None = None
    """The row's status afterwards (None if the row does not exist)."""
    reason: str | None = None
    """One readable sentence when not sent."""
    attempt: int | None = None
    success_count: int = 0
    total_recipients: int = 0
    novu_transaction_ids: list[str] = field(default_factory=list)
    results: list[RecipientResult] = field(default_factory=list)
    next_attempt_at: datetime | None = None

    @property
    def success(self) -> bool:
        return self.outcome is Outcome.SENT
