"""Frozen dataclasses that cross Temporal boundaries (workflow inputs, activity inputs and results).

Fields added later get defaults so that histories written by an older version still decode.
"""

# No `from __future__ import annotations` here: with real (not string) annotations Temporal's data converter
# decodes these classes about twice as fast, and the poll workflow decodes one ClaimBatch per batch.
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum


def child_id(notification_id: int, attempt: int) -> str:
    """The one workflow id an attempt may run under: duplicates are impossible by construction (I4)."""
    return f"notification-{notification_id}-a{attempt}"


def schedule_id(kind: "PollKind") -> str:
    """The id of the Temporal Schedule that starts the polls of `kind`."""
    return f"xnovu-poll-{kind.value}"


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
    IN_PROGRESS = "in_progress"
    """This piece of the attempt used its time budget; the attempt goes on in the next piece (same claim)."""


@dataclass(frozen=True)
class ClaimedNotification:
    """A row a poll claimed (now PROCESSING at `attempt`), with what its child workflow needs."""

    notification_id: int
    attempt: int
    name: str = ""
    workflow_key: str | None = None
    enterprise_id: str | None = None
    scheduled_for: datetime | None = None
    priority: int = 0
    """The row's urgency when claimed (xnovu/core/priority.py): 0 normal, above 0 more urgent, below 0 less."""


@dataclass(frozen=True)
class ClaimBatch:
    """Result of one claim activity."""

    rows: list[ClaimedNotification]
    batch_size: int
    """The limit asked for: a full batch means more rows may be waiting."""
    capacity_limited: bool = False
    """Rows were waiting but the deployment had as much in flight as it can send: claim again shortly."""
    urgent_room: bool = False
    """The urgent window has room after this claim: an urgent row committed now would be admitted, so a poll held back
    by a full normal window claims again within a second instead of backing off (docs/priority.md "Claims")."""
    linger_s: float = 0.0
    """Stay open this long for wake signals after the fan-out (commits come as a trickle, WAKEUP_LINGER_MS); 0: close.
    Claims recorded before this field decode with 0."""
    linger_owner: str = ""
    """The identity of the worker whose claim decided the linger (xnovu/core/arrivals.py): only its listener signals."""


@dataclass(frozen=True)
class PollInput:
    """Input of PollNotificationsWorkflow."""

    kind: PollKind
    batches_before: int = 0
    """Batches drained by earlier runs of this chain (continue-as-new)."""
    capacity_waits: int = 0
    """Claims in a row that found rows but no room in flight (sets the back-off)."""


@dataclass(frozen=True)
class PollResult:
    """What one poll run did."""

    kind: PollKind
    claimed: int = 0
    started: int = 0
    already_running: int = 0
    batches: int = 0


@dataclass(frozen=True)
class PieceProgress:
    """Where an attempt of a notification stands between two pieces (docs/performance.md "Costs that do not grow
    with the table"): the pieces go through the recipients in id order, one window at a time, so each reads a bounded
    part of the delivery ledger; what the earlier pieces counted is carried here instead of being re-read."""

    start: str
    """The next piece begins with this recipient id: every recipient before it (in id order) was tried."""
    acknowledged: int = 0
    """Recipients before `start` that Novu acknowledged (in this attempt or before)."""
    failed: int = 0
    """Recipients before `start` whose request failed in this attempt (the next attempt retries them)."""
    permanent: bool = False
    """One of those failures was permanent (the attempt dead-letters once it has tried everyone)."""
    first_error: str | None = None
    """The first of those failures, for the attempt's summary."""
    recipients_digest: str = ""
    """A digest of the row's recipients when the attempt set out: a list edited mid-attempt (a recipient added below
    `start`) sends the attempt through every window again, instead of skipping the new recipient ("" = unknown)."""


@dataclass(frozen=True)
class NotificationInput:
    """Input of NotificationTriggerWorkflow: one notification, one attempt."""

    notification_id: int
    attempt: int | None = None
    """The attempt this workflow owns (its id is notification-{id}-a{attempt}); None = take the next one."""
    scheduled_for: datetime | None = None
    """Wait on a durable timer until then before sending."""
    pieces_before: int = 0
    """Pieces of this attempt already run by earlier runs of this workflow (continue-as-new)."""
    progress: PieceProgress | None = None
    """Where the next piece resumes (continue-as-new); None: from the first recipient."""


@dataclass(frozen=True)
class TriggerRequest:
    """Input of the trigger_notification_by_id activity."""

    notification_id: int
    attempt: int | None = None
    time_budget_s: float | None = None
    """Stop starting Novu requests after this long and report IN_PROGRESS (None: run the attempt to the end)."""
    piece: int = 0
    """Which piece of the attempt this is (0 = the first)."""
    progress: PieceProgress | None = None
    """Where this piece resumes, from the previous piece's result; None: from the first recipient (a history
    written before pieces carried it resumes there too, which re-reads but never re-sends)."""


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


#: Entries of `TriggerResult.results` and `error_details.results` at most (failures first): what crosses Temporal
#: stays small whatever the number of recipients; the delivery ledger holds every recipient.
MAX_RESULT_ENTRIES = 100


@dataclass(frozen=True)
class TriggerResult:
    """What happened to one notification in one trigger attempt (or one piece of it).

    Bounded whatever the number of recipients: counts for everyone, entries for at most MAX_RESULT_ENTRIES.
    """

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
    failed_count: int = 0
    """Recipients that failed in this attempt (all of them, also those beyond `results`)."""
    wait_s: float | None = None
    """IN_PROGRESS only: wait this long before the next piece (the attempt woke before its send time)."""
    progress: PieceProgress | None = None
    """IN_PROGRESS: where the next piece of the attempt resumes."""

    @property
    def success(self) -> bool:
        return self.outcome is Outcome.SENT

    @property
    def more(self) -> bool:
        """The attempt is not over: run its next piece."""
        return self.outcome is Outcome.IN_PROGRESS


@dataclass(frozen=True)
class TriggerPlan:
    """What TriggerMultipleNotificationsWorkflow does with one id: run the attempt's own workflow, or answer now."""

    notification_id: int
    attempt: int | None = None
    """Start (or join) workflow notification-{id}-a{attempt}: the running attempt, or the row's next one."""
    name: str = ""
    workflow_key: str | None = None
    enterprise_id: str | None = None
    result: TriggerResult | None = None
    """No attempt may run (missing, sent, retracted, dead-lettered): the answer, without a workflow."""
    priority: int = 0
    """The row's urgency (xnovu/core/priority.py): the workflow's Temporal priority key and `XnovuPriority`."""


@dataclass(frozen=True)
class MultipleTriggerPlan:
    """Result of the trigger_multiple_notifications_by_id activity: one plan per id, in the request's order."""

    plans: list[TriggerPlan]
    concurrency: int
