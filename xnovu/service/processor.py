"""The trigger core: one attempt at one notification, from the outbox row to Novu and back.

    load row → I1 checks → claim attempt (compare-and-set) → ledger → Novu for unacknowledged recipients
    → record per-recipient outcomes → finalize SENT | FAILED (retry with backoff) | dead-letter

It knows nothing of Temporal: activities call it, and so can a user's own code (`from xnovu import
NotificationProcessor`; `xnovu.worker.composition.build_processor` wires it like the worker does). It was
`xnovu.core.processor` until issue 18 made xnovu/core pure: it drives the database and Novu, so it sits above them.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import dataclasses
import hashlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from xnovu.core.models import MAX_RESULT_ENTRIES, Outcome, PieceProgress, RecipientResult, TriggerPlan, TriggerResult
from xnovu.core.status import NotificationStatus
from xnovu.db.errors import is_transient_db_error
from xnovu.db.repository import DeliveryUpdate, NotificationRow, Repository, Undecodable
from xnovu.errors import NovuConfigurationError
from xnovu.novu.client import (
    BULK_MAX_EVENTS,
    EventOutcome,
    NovuClient,
    RecipientEvent,
    SendControl,
    transaction_id_for,
)

log = logging.getLogger(__name__)

#: Novu rejects an event whose body exceeds 512 KB (413); checked before sending so the row fails alone (I5).
MAX_PAYLOAD_BYTES = 524_288
#: Room for the recipient id and transactionId that each event adds to the body.
EVENT_OVERHEAD_BYTES = 160
#: How far in the future a send time may be and still count as due (clock skew between DB and worker).
SCHEDULE_TOLERANCE = timedelta(seconds=2)
#: An attempt woken before its send time by the database's clock waits the rest when it is at most this much: a
#: timer that ended early. Further away, the send time was moved, and the row goes back to the scheduled poll.
EARLY_WAKE_MAX = timedelta(minutes=5)
#: Recipients one piece of an attempt tries at most (a window of the recipients in id order): what bounds the ledger
#: rows its acquire reads, however many recipients the row has (docs/performance.md "Costs that do not grow with the
#: table"). 100 bulk requests; a piece that uses its whole window before its time budget ends early, the next one
#: takes the next window.
PIECE_RECIPIENTS = 10_000


def retry_delay_ms(attempt: int, base_ms: int, max_ms: int) -> int:
    """Exponential backoff before retry number `attempt` + 1: base·2^(attempt-1), capped at max."""
    if attempt < 1:
        return min(base_ms, max_ms)
    return int(min(max_ms, base_ms * 2 ** min(attempt - 1, 62)))


def notification_block_reason(row: NotificationRow, now: datetime) -> str | None:
    """Why the notification itself must not be sent now (I1), or None."""
    if row.status == NotificationStatus.RETRACTED:
        why = f": {row.retraction_reason}" if row.retraction_reason else ""
        return f"notification {row.id} was retracted{why}"
    if row.publish_status != "PUBLISH":
        return f"notification {row.id} is {row.publish_status}, only PUBLISH is sent"
    if row.deactivated:
        return f"notification {row.id} is deactivated"
    if row.scheduled_for is not None and row.scheduled_for > now + SCHEDULE_TOLERANCE:
        return f"notification {row.id} is scheduled for {row.scheduled_for.isoformat()}; it is sent then"
    return None


#: Workflow states that hold notifications back until the workflow is published (or reactivated) again.
HELD_WORKFLOW_STATES = frozenset({"DRAFT", "NONE"})


def workflow_block_reason(row: NotificationRow) -> str | None:
    """Why the row's Novu workflow makes it unsendable for good (dead-letter): missing, DISCARD or DELETED."""
    if row.workflow_key is None:
        return f"notification {row.id} points at a workflow that does not exist (deleted?)"
    if row.workflow_publish_status not in HELD_WORKFLOW_STATES | {"PUBLISH"}:
        return f"workflow {row.workflow_key!r} is {row.workflow_publish_status}, only PUBLISH is sent"
    return None


def workflow_hold_reason(row: NotificationRow) -> str | None:
    """Why the row waits for its workflow (DRAFT/NONE or deactivated): PENDING, sent once it is published."""
    if row.workflow_publish_status in HELD_WORKFLOW_STATES:
        return (
            f"workflow {row.workflow_key!r} is {row.workflow_publish_status}; "
            "the notification waits until it is published"
        )
    if row.workflow_deactivated:
        return f"workflow {row.workflow_key!r} is deactivated; the notification waits until it is reactivated"
    return None


def event_size_bytes(row: NotificationRow) -> int:
    """Bytes of one event's body as Novu measures its 512 KB limit (the whole event, not just the payload)."""
    event = {"name": row.workflow_key, "payload": row.payload, "overrides": row.overrides, "to": {"subscriberId": ""}}
    return len(json.dumps(event, ensure_ascii=False).encode("utf-8")) + EVENT_OVERHEAD_BYTES


def _json_type(value: Any) -> str:
    """The JSON name of a decoded value's type, as a user who wrote the row would say it."""
    if isinstance(value, Undecodable):
        return f"a value {value.reason}"
    names = {
        dict: "an object",
        list: "an array",
        str: "a string",
        bool: "a boolean",
        int: "a number",
        float: "a number",
    }
    return "null" if value is None else names.get(type(value), type(value).__name__)


def malformed_reason(row: NotificationRow) -> str | None:
    """Why the row can never be sent as it is (I5: it fails alone), or None."""
    if not isinstance(row.payload, dict):
        return f"payload must be a JSON object, got {_json_type(row.payload)}"
    if row.overrides is not None and not isinstance(row.overrides, dict):
        return f"overrides must be a JSON object or null, got {_json_type(row.overrides)}"
    if not row.recipients:
        return "recipients is empty"
    if any(r is None for r in row.recipients):
        return "recipients contains a null entry"
    size = event_size_bytes(row)
    if size > MAX_PAYLOAD_BYTES:
        return f"the event is {size} bytes, over Novu's limit of {MAX_PAYLOAD_BYTES} bytes (512 KB)"
    return None


def recipients_digest(ordered: Sequence[str]) -> str:
    """A short digest of a row's recipients in id order: tells a piece whether the list changed mid-attempt."""
    return hashlib.blake2b("\n".join(ordered).encode(), digest_size=8).hexdigest()


def unique_recipients(recipients: Sequence[str | None]) -> list[str]:
    """Distinct recipients in their original order: a duplicate id is one subscriber, triggered once."""
    return list(dict.fromkeys(r for r in recipients if r is not None))


class NotificationProcessor:
    """Runs trigger attempts against one repository and one Novu client."""

    def __init__(
        self,
        repo: Repository,
        novu: NovuClient,
        *,
        max_attempts: int,
        retry_backoff_base_ms: int,
        retry_backoff_max_ms: int,
        processing_lease_ms: int,
        request_concurrency: int = 10,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.repo = repo
        self.novu = novu
        self.max_attempts = max_attempts
        self.backoff_base_ms = retry_backoff_base_ms
        self.backoff_max_ms = retry_backoff_max_ms
        self.lease_ms = processing_lease_ms
        self.request_concurrency = request_concurrency
        self.clock = clock

    async def plan(self, notification_id: int) -> TriggerPlan:
        """Which attempt a trigger of this row runs, as the attempt's own workflow (I4: the only sender of attempt k
        is workflow notification-{id}-a{k}): the attempt under way (joined), or the next one; or, when no attempt
        may run (missing, sent, retracted, dead-lettered), the answer itself."""
        row = await self.repo.load(notification_id) if 0 < notification_id < 2**63 else None
        if row is None:
            return TriggerPlan(notification_id, result=_missing(notification_id))
        if row.status == NotificationStatus.PROCESSING:
            attempt = row.attempts
        elif row.status in (NotificationStatus.PENDING, NotificationStatus.FAILED) and row.dead_lettered_at is None:
            attempt = row.attempts + 1
        else:
            return TriggerPlan(notification_id, result=await self._not_acquired(notification_id, None, 0))
        return TriggerPlan(
            notification_id, attempt, row.name or "", row.workflow_key, row.enterprise_id, priority=row.priority
        )

    async def process_many(self, ids: Sequence[int], concurrency: int) -> list[TriggerResult]:
        """`process` for many ids with at most `concurrency` at a time; one bad id does not stop the rest."""
        gate = asyncio.Semaphore(max(1, concurrency))

        async def one(nid: int) -> TriggerResult:
            async with gate:
                return await self.process(nid)

        outcomes = await asyncio.gather(*(one(nid) for nid in ids), return_exceptions=True)
        # Problems that concern every id (Novu key, database down) fail the call so that it is retried whole;
        # anything else belongs to its own id.
        for o in outcomes:
            if isinstance(o, NovuConfigurationError) or (isinstance(o, BaseException) and is_transient_db_error(o)):
                raise o
        results: list[TriggerResult] = []
        for nid, o in zip(ids, outcomes, strict=True):
            if isinstance(o, BaseException):
                if not isinstance(o, Exception):
                    raise o
                log.exception("unexpected error processing a notification", extra={"notification_id": nid}, exc_info=o)
                o = TriggerResult(nid, Outcome.REJECTED, reason=f"unexpected error: {type(o).__name__}: {o}")
            results.append(o)
        return results

    async def process(
        self,
        notification_id: int,
        attempt: int | None = None,
        *,
        time_budget_s: float | None = None,
        piece: int = 0,
        progress: PieceProgress | None = None,
        direct: bool = False,
    ) -> TriggerResult:
        """One attempt (or one piece of it): `attempt` is the attempt number this caller owns, or None to claim
        the next one. A claim taken with None has no workflow (a direct claim): only a caller that says `direct`
        continues it, never the attempt's workflow, so a batch trigger that finds it cannot add a second sender.
        With `time_budget_s`, no Novu request starts after that long and at most PIECE_RECIPIENTS
        recipients (in id order, from `progress.start`) are tried: the result is IN_PROGRESS with the `progress`
        the caller hands to the next piece, which resumes under the same claim.

        Raises NovuConfigurationError (Novu refused the key) after recording what was acknowledged: the row
        keeps its claim and attempt count, so fixing the key lets the same attempt finish.
        """
        if not 0 < notification_id < 2**63:  # bigint identity: anything else cannot exist
            return _missing(notification_id)
        owner = attempt is not None
        mode = "take" if attempt is None else ("direct" if direct else "workflow")
        if attempt is None:
            current = await self.repo.load(notification_id)
            if current is None:
                return _missing(notification_id)
            if current.status not in (NotificationStatus.PENDING, NotificationStatus.FAILED):
                return await self._not_acquired(notification_id, None, piece)
            attempt = current.attempts + 1
        window = None if time_budget_s is None else PIECE_RECIPIENTS
        start = None if progress is None or window is None else progress.start or None
        row = await self.repo.acquire(notification_id, attempt, self.lease_ms, start=start, window=window, mode=mode)
        if row is None:
            return await self._not_acquired(notification_id, attempt if owner else None, piece, direct=direct)
        try:
            return await self._send(
                row, attempt, time_budget_s, piece, progress if window else None, window, direct=mode != "workflow"
            )
        except NovuConfigurationError:
            raise
        except Exception as exc:
            if is_transient_db_error(exc):
                raise  # the database went away: retried until it is back (the claim holds the row)
            # A bug or a row we could not foresee: this row fails alone, readable, instead of retrying forever (I5).
            log.exception("unexpected error processing a notification", extra={"notification_id": row.id})
            reason = f"unexpected error: {type(exc).__name__}: {exc}"
            return await self._dead_letter(row, attempt, reason, _Tally(), resolved=False)

    async def _not_acquired(
        self, notification_id: int, attempt: int | None, piece: int, token: int | None = None, *, direct: bool = False
    ) -> TriggerResult:
        """Explain, from the row as it is now, why the attempt cannot go on.

        `attempt` is the attempt the caller owns (None: it owns none); `token` the fencing token of the caller's
        piece, when it had one. When that attempt still holds the row, this settles it (I7: an attempt never ends
        leaving its row PROCESSING), see `_settle_own_claim`, unless a newer piece of the attempt took over.
        """
        row = await self.repo.load(notification_id)
        if row is None:
            return _missing(notification_id)
        if row.status == NotificationStatus.SENT:
            return self._skipped(row, f"notification {row.id} was already sent")
        if row.status == NotificationStatus.PROCESSING and row.direct_claim and not direct:
            return self._skipped(row, f"attempt {row.attempts} is being sent by a direct call of the trigger core")
        if attempt is not None and row.status == NotificationStatus.PROCESSING and row.attempts == attempt:
            if token is not None and row.piece != token:
                # This piece was re-run elsewhere (its worker stalled past the workflow task timeout): the newer
                # piece owns the attempt now, and this one stops without touching the row.
                return self._skipped(
                    row, f"a newer piece of attempt {attempt} took over (fencing token {row.piece}, ours {token})"
                )
            return await self._settle_own_claim(row, attempt, piece)
        reason = notification_block_reason(row, row.db_now or self.clock())
        if reason is not None:
            log.info("notification rejected", extra={"notification_id": row.id, "reason": reason})
            return TriggerResult(row.id, Outcome.REJECTED, row.status, reason=reason, attempt=attempt)
        if row.dead_lettered_at is not None and row.status == NotificationStatus.FAILED:
            return TriggerResult(
                row.id,
                Outcome.REJECTED,
                row.status,
                attempt=row.attempts,
                reason=f"notification {row.id} is dead-lettered; requeue it with `xnovu dlq requeue {row.id}`",
            )
        if row.status == NotificationStatus.PROCESSING:
            return self._skipped(
                row, f"attempt {row.attempts} (workflow notification-{row.id}-a{row.attempts}) is processing it"
            )
        return self._skipped(row, f"attempt {attempt} is stale: the row is {row.status} at attempt {row.attempts}")

    async def _settle_own_claim(self, row: NotificationRow, attempt: int, piece: int) -> TriggerResult:
        """The caller's attempt still holds the row, but acquire or the fence refused it: decide, never leave it.

        - sent too early (Temporal's or the worker's clock ahead of Postgres', which every claim condition uses):
          wait the rest, up to EARLY_WAKE_MAX; a send time moved further away gives the row back;
        - the notification or its workflow may not be sent now (unpublished, deactivated, DRAFT): give it back
          PENDING, to be claimed again once it may be sent (held rows are not claimed meanwhile);
        - its workflow is gone for good (missing, DISCARD, DELETED): dead-letter it;
        - nothing blocks any more (it flipped back between the check and this read): go on with the next piece.
        """
        now = row.db_now or self.clock()
        early = row.scheduled_for - now if row.scheduled_for is not None else None
        sendable = row.publish_status == "PUBLISH" and not row.deactivated
        if sendable and early is not None and SCHEDULE_TOLERANCE < early <= EARLY_WAKE_MAX:
            waiting = f"woke {early.total_seconds():.1f} s before the send time by the database's clock; waiting"
            return await self._goes_on(row, attempt, waiting, wait_s=early.total_seconds())
        permanent = workflow_block_reason(row)
        if permanent is not None:
            return await self._dead_letter(row, attempt, permanent, _Tally(), resolved=False)
        reason = notification_block_reason(row, now) or workflow_hold_reason(row)
        if reason is None:
            return await self._goes_on(row, attempt, f"attempt {attempt} still holds the row and nothing blocks it")
        details = self._details_error(reason, attempt, None, False)
        released = await self.repo.release(row.id, attempt, details, attempt_ran=piece > 0, piece=row.piece)
        log.info("notification given back", extra={"notification_id": row.id, "reason": reason})
        status = NotificationStatus.PENDING if released else "unknown"
        return TriggerResult(row.id, Outcome.REJECTED, status, reason=reason, attempt=attempt)

    async def _goes_on(self, row: NotificationRow, attempt: int, reason: str, **extra: Any) -> TriggerResult:
        """The attempt is not over though this piece sent nothing: the piece closes (nothing of it on the wire, and
        what an earlier piece left unknown stays so) and the next piece goes on (after `wait_s`, from `progress`)."""
        await self.repo.close_piece(row.id, row.piece, resolved=False)
        return TriggerResult(
            row.id, Outcome.IN_PROGRESS, NotificationStatus.PROCESSING, reason=reason, attempt=attempt, **extra
        )

    @staticmethod
    def _skipped(row: NotificationRow, reason: str) -> TriggerResult:
        return TriggerResult(row.id, Outcome.SKIPPED, row.status, reason=reason, attempt=row.attempts)

    async def _send(
        self,
        row: NotificationRow,
        attempt: int,
        time_budget_s: float | None,
        piece: int,
        progress: PieceProgress | None = None,
        window_size: int | None = None,
        *,
        direct: bool = False,
    ) -> TriggerResult:
        permanent = workflow_block_reason(row) or malformed_reason(row)
        if permanent is None and attempt > self.max_attempts:
            permanent = f"gave up after {self.max_attempts} attempts"
        if permanent is not None:
            return await self._dead_letter(row, attempt, permanent, _Tally(), resolved=False)
        held = workflow_hold_reason(row)
        if held is not None:
            details = self._details_error(held, attempt, None, False)
            await self.repo.release(row.id, attempt, details, attempt_ran=piece > 0, piece=row.piece)
            log.info("notification held back", extra={"notification_id": row.id, "reason": held})
            return TriggerResult(row.id, Outcome.REJECTED, NotificationStatus.PENDING, reason=held, attempt=attempt)

        recipients = unique_recipients(row.recipients)
        # The recipients this piece tries: all of them, or (a piece with a window) the next window in id order,
        # the same window whose ledger rows acquire read. Everything before it was tried by earlier pieces, whose
        # counts `progress` carries.
        window, after, digest = recipients, None, ""
        if window_size is not None:
            ordered = sorted(recipients)
            digest = recipients_digest(ordered)
            if progress is not None and progress.recipients_digest not in ("", digest):
                # The recipients changed since the attempt set out: go through every window again (the ledger skips
                # whoever Novu acknowledged), or a recipient added below `start` would never be tried.
                reason = f"the recipients changed during attempt {attempt}: it goes through them again"
                restart = PieceProgress(start="", recipients_digest=digest)
                return await self._goes_on(row, attempt, reason, progress=restart)
            begin = 0 if progress is None else bisect.bisect_left(ordered, progress.start)
            window = ordered[begin : begin + window_size]
            after = ordered[begin + window_size] if begin + window_size < len(ordered) else None
        pending = [r for r in window if r not in row.acknowledged]
        assert row.workflow_key is not None  # checked by workflow_block_reason
        tally = _Tally(acknowledged_before=len(window) - len(pending), carried=progress, track=window_size is not None)
        started = time.monotonic()
        if pending and (row.previous_piece_open_s is not None or row.unresolved):
            pending = await self._resolve_unknown(row, pending, tally)
        if pending:
            deadline = None if time_budget_s is None else started + time_budget_s
            # acquired_at is the acquire's time: after a look-up that took longer than the grace, the first request
            # is fenced (and marked) like every other.
            claim = _Claim(self.repo, row.id, attempt, self.lease_ms, acquired_at=started, piece=row.piece)
            async with claim:

                async def record(outcomes: Sequence[EventOutcome]) -> None:
                    sent = [o for o in outcomes if o.outcome != "unsent"]
                    await self.repo.record_outcomes(row.id, [_ledger_update(o) for o in sent])
                    tally.add(outcomes)

                await self.novu.trigger(
                    workflow_key=row.workflow_key,
                    payload=row.payload,
                    overrides=row.overrides,
                    events=[
                        RecipientEvent(r, transaction_id_for(row.id, r), row.key_generations.get(r, 0)) for r in pending
                    ],
                    concurrency=self.request_concurrency,
                    control=SendControl(
                        before_request=claim.check,
                        on_outcomes=record,
                        deadline=deadline,
                        urgency=row.priority,
                        enterprise=row.enterprise_id,
                        notification=row.id,
                    ),
                )
            if tally.config_error is not None:
                # Nothing is on the wire (every request was answered): the retry need not look anything up.
                await self.repo.close_piece(row.id, row.piece, resolved=True)
                raise NovuConfigurationError(tally.config_error)
            if claim.lost:
                lost = await self._not_acquired(
                    row.id, attempt, piece + (tally.sent_requests > 0), row.piece, direct=direct
                )
                return dataclasses.replace(lost, **tally.counts(len(recipients)))
            if tally.unsent and window_size is None:
                await self.repo.close_piece(row.id, row.piece, resolved=True)
                return TriggerResult(
                    row.id,
                    Outcome.IN_PROGRESS,
                    NotificationStatus.PROCESSING,
                    reason=f"{tally.unsent} recipients left for the next piece of attempt {attempt}",
                    attempt=attempt,
                    **tally.counts(len(recipients)),
                )

        if window_size is not None:
            unsent = tally.unsent_ids()
            resume = min(unsent) if unsent else after
            if resume is not None:
                # The piece ends normally with the attempt still under way: every request was answered. From now
                # on the attempt counts in flight only the recipients it has not tried (docs/priority.md "Claims").
                left = len(recipients) - bisect.bisect_left(sorted(recipients), resume)
                await self.repo.close_piece(row.id, row.piece, resolved=True, tokens=max(1, left))
                progress = dataclasses.replace(
                    tally.progress(resume, window, row.acknowledged), recipients_digest=digest
                )
                return TriggerResult(
                    row.id,
                    Outcome.IN_PROGRESS,
                    NotificationStatus.PROCESSING,
                    reason=f"{left} recipients left for the next piece of attempt {attempt}",
                    attempt=attempt,
                    progress=progress,
                    **(tally.counts(len(recipients)) | {"success_count": progress.acknowledged}),
                )

        results = tally.results(row.id)
        if not tally.failed:
            details = self._details(row, tally, results, attempt)
            ok = await self.repo.finalize(
                row.id, attempt, status=NotificationStatus.SENT, error_details=details, piece=row.piece
            )
            return self._finalized(row, attempt, ok, Outcome.SENT, NotificationStatus.SENT, tally, results, None, None)

        summary = f"{tally.failed} of {len(recipients)} recipients failed; first: {tally.first_error()}"
        if tally.permanent:
            return await self._dead_letter(row, attempt, f"Novu rejected the notification: {summary}", tally)
        if attempt >= self.max_attempts:
            return await self._dead_letter(row, attempt, f"gave up after {attempt} attempts: {summary}", tally)

        next_at = self.clock() + timedelta(
            milliseconds=retry_delay_ms(attempt, self.backoff_base_ms, self.backoff_max_ms)
        )
        details = self._details(row, tally, results, attempt) | self._details_error(summary, attempt, next_at, False)
        ok = await self.repo.finalize(
            row.id,
            attempt,
            status=NotificationStatus.FAILED,
            error_details=details,
            next_attempt_at=next_at,
            piece=row.piece,
        )
        return self._finalized(
            row, attempt, ok, Outcome.RETRY, NotificationStatus.FAILED, tally, results, summary, next_at
        )

    async def _resolve_unknown(self, row: NotificationRow, pending: list[str], tally: _Tally) -> list[str]:
        """Before this piece sends anything, settle what Novu may already have (docs/design.md "Pieces, fencing
        tokens and unknown outcomes"): the recipients the ledger marks unknown (on the wire when their piece ended,
        or left unknown by the feed), and, when the previous piece never ended normally, its first request, which
        went out unfenced under the acquire's grace. Each is looked up in Novu's activity feed once anything still
        on the wire has had time to land (NOVU_TIMEOUT_MS) and the feed time to show it (NOVU_OUTCOME_SETTLE_MS).
        Returns the recipients left to send: acknowledged ones are recorded SENT, and those the feed cannot tell
        about are recorded unknown and held (never sent blindly; a later attempt asks again)."""
        unresolved = [r for r in pending if r in row.unresolved]
        candidates = set(unresolved)
        if row.previous_piece_open_s is not None:
            first_request = [r for r in pending if r not in candidates][:BULK_MAX_EVENTS]
            candidates.update(first_request)
        if not candidates:
            return pending
        # The newest request that may still be on the wire: a marked one, or the previous piece's first request.
        ages = [a for a in (row.unresolved_age_s,) if a is not None]
        if row.previous_piece_open_s is not None:
            ages.append(max(0.0, row.previous_piece_open_s - _Claim.FIRST_REQUEST_GRACE_S))
        in_flight_left = max([0.0] + [self.novu.timeout_s - age for age in ages])
        await asyncio.sleep(in_flight_left + self.novu.settle_s)
        events = [
            RecipientEvent(r, transaction_id_for(row.id, r), row.key_generations.get(r, 0))
            for r in pending
            if r in candidates
        ]
        looked_up = await self.novu.lookup(events)
        decided = [o for o in looked_up if o.outcome != "unsent"]
        await self.repo.record_outcomes(row.id, [_ledger_update(o) for o in decided])
        tally.add(decided)
        done = {o.recipient_id for o in decided}
        log.info(
            "unknown outcomes looked up in Novu's activity feed",
            extra={
                "notification_id": row.id,
                "looked_up": len(events),
                "acknowledged": sum(1 for o in decided if o.outcome == "acknowledged"),
                "still_unknown": sum(1 for o in decided if o.outcome == "unknown"),
            },
        )
        return [r for r in pending if r not in done]

    async def _dead_letter(
        self, row: NotificationRow, attempt: int, reason: str, tally: _Tally, *, resolved: bool = True
    ) -> TriggerResult:
        """`resolved` False: the piece ends before it resolved what an open predecessor may have sent, which stays
        open (a requeue looks it up first)."""
        results = tally.results(row.id)
        details = self._details(row, tally, results, attempt) | self._details_error(reason, attempt, None, True)
        ok = await self.repo.finalize(
            row.id,
            attempt,
            status=NotificationStatus.FAILED,
            error_details=details,
            dead_letter=True,
            piece=row.piece,
            resolved=resolved,
        )
        log.warning(
            "notification dead-lettered", extra={"notification_id": row.id, "attempt": attempt, "reason": reason}
        )
        return self._finalized(
            row, attempt, ok, Outcome.DEAD_LETTERED, NotificationStatus.FAILED, tally, results, reason, None
        )

    def _finalized(
        self,
        row: NotificationRow,
        attempt: int,
        owned: bool,
        outcome: Outcome,
        status: str,
        tally: _Tally,
        results: list[RecipientResult],
        reason: str | None,
        next_at: datetime | None,
    ) -> TriggerResult:
        if not owned:
            # Retracted or re-claimed while we were sending: the ledger holds what was delivered.
            outcome, status = Outcome.SKIPPED, "unknown"
            reason = f"attempt {attempt} lost its claim while sending (retracted or lease expired); ledger updated"
        return TriggerResult(
            row.id,
            outcome,
            status,
            reason=reason,
            attempt=attempt,
            results=results,
            next_attempt_at=next_at,
            **tally.counts(len(unique_recipients(row.recipients)) if row.recipients else 0),
        )

    def _details(
        self, row: NotificationRow, tally: _Tally, results: list[RecipientResult], attempt: int
    ) -> dict[str, Any]:
        """Seed-compatible error_details (README "Lifecycle"), bounded like the result: counts for everyone,
        entries for at most MAX_RESULT_ENTRIES recipients (the ledger has all of them)."""
        total = len(unique_recipients(row.recipients)) if row.recipients else 0
        details: dict[str, Any] = {
            "novu_transaction_ids": [r.transaction_id for r in results if r.success],
            "results": [
                {"recipientId": r.recipient_id, "success": r.success}
                | ({"transactionId": r.transaction_id} if r.transaction_id else {})
                | ({"error": r.error} if r.error else {})
                for r in results
            ],
            "successCount": tally.acknowledged_total,
            "totalRecipients": total,
            "timestamp": self.clock().isoformat(),
            "attempt": attempt,
        }
        omitted = total - len(results) if results or total else 0
        if omitted > 0 and tally.attempted:
            details["resultsOmitted"] = omitted
        return details

    def _details_error(self, error: str, attempt: int, next_at: datetime | None, dead: bool) -> dict[str, Any]:
        return {
            "error": error,
            "attempt": attempt,
            "next_attempt_at": next_at.isoformat() if next_at else None,
            "dead_letter": dead,
            "timestamp": self.clock().isoformat(),
        }


def _missing(notification_id: int) -> TriggerResult:
    return TriggerResult(notification_id, Outcome.REJECTED, reason=f"notification {notification_id} does not exist")


class _Tally:
    """What one attempt (piece) learnt from Novu, kept small: counts, and entries for the first recipients only.

    With `carried` (what the earlier pieces of the attempt counted) the counts are the attempt's; with `track`, the
    outcome of each recipient of the piece is kept too (a window: at most PIECE_RECIPIENTS), to tell what the next
    piece must carry.
    """

    def __init__(
        self, acknowledged_before: int = 0, *, carried: PieceProgress | None = None, track: bool = False
    ) -> None:
        self.carried = carried
        self.acknowledged_before = acknowledged_before + (carried.acknowledged if carried else 0)
        self.acknowledged_now = 0
        self.failed = carried.failed if carried else 0
        self.unsent = 0
        self.sent_requests = 0
        self.permanent = bool(carried and carried.permanent)
        self.config_error: str | None = None
        self.first_failures: list[EventOutcome] = []
        self.first_acknowledged: list[EventOutcome] = []
        self.outcomes: dict[str, EventOutcome] | None = {} if track else None

    def first_error(self) -> str:
        """The first failure of the attempt, for its summary."""
        if self.carried is not None and self.carried.first_error is not None:
            return self.carried.first_error
        first = self.first_failures[0] if self.first_failures else None
        return "unknown" if first is None else (first.error or first.outcome)

    def unsent_ids(self) -> list[str]:
        return [r for r, o in (self.outcomes or {}).items() if o.outcome == "unsent"]

    def progress(self, resume: str, window: Sequence[str], acknowledged: frozenset[str]) -> PieceProgress:
        """What the next piece carries when it resumes at `resume`: the counts of every recipient before it."""
        carried = self.carried or PieceProgress(start="")
        done = [r for r in window if r < resume]
        outcomes = self.outcomes or {}
        now = {r: o.outcome for r, o in outcomes.items()}
        acked = sum(1 for r in done if r in acknowledged or now.get(r) == "acknowledged")
        failures = [outcomes[r] for r in done if now.get(r) not in (None, "acknowledged", "unsent")]
        first = carried.first_error
        if first is None and failures:
            first = failures[0].error or failures[0].outcome
        return PieceProgress(
            start=resume,
            acknowledged=carried.acknowledged + acked,
            failed=carried.failed + len(failures),
            permanent=carried.permanent or any(f.outcome == "permanent" for f in failures),
            first_error=first,
        )

    @property
    def acknowledged_total(self) -> int:
        return self.acknowledged_before + self.acknowledged_now

    @property
    def attempted(self) -> bool:
        return self.acknowledged_total + self.failed > 0

    def add(self, outcomes: Sequence[EventOutcome]) -> None:
        if outcomes and outcomes[0].outcome != "unsent":
            self.sent_requests += 1
        for o in outcomes:
            if self.outcomes is not None:
                self.outcomes[o.recipient_id] = o
            if o.outcome == "acknowledged":
                self.acknowledged_now += 1
                if len(self.first_acknowledged) < MAX_RESULT_ENTRIES:
                    self.first_acknowledged.append(o)
            elif o.outcome == "unsent":
                self.unsent += 1
            else:
                # transient, unknown (held until the feed knows: a later attempt asks again), permanent, config
                self.failed += 1
                self.permanent |= o.outcome == "permanent"
                if o.outcome == "config" and self.config_error is None:
                    self.config_error = o.error or "Novu rejected the API key; check NOVU_SECRET_KEY"
                if len(self.first_failures) < MAX_RESULT_ENTRIES:
                    self.first_failures.append(o)

    def results(self, notification_id: int) -> list[RecipientResult]:
        """Failures first, then acknowledgements, MAX_RESULT_ENTRIES at most."""
        entries = [RecipientResult(o.recipient_id, False, o.transaction_id, o.error) for o in self.first_failures]
        entries += [
            RecipientResult(o.recipient_id, True, o.novu_transaction_id or o.transaction_id)
            for o in self.first_acknowledged
        ]
        return entries[:MAX_RESULT_ENTRIES]

    def counts(self, total: int) -> dict[str, Any]:
        ids = [o.novu_transaction_id or o.transaction_id for o in self.first_acknowledged]
        return {
            "success_count": self.acknowledged_total,
            "total_recipients": total,
            "failed_count": self.failed,
            "novu_transaction_ids": ids[:MAX_RESULT_ENTRIES],
        }


class _Claim:
    """The attempt's hold on its row while it sends: fences each Novu request and keeps the lease alive.

    Every request after the first re-checks the claim in Postgres right before it goes out (the acquire that
    started the piece serves for the first one, when it starts within FIRST_REQUEST_GRACE_S): the same attempt and
    the same piece (its fencing token), so once a newer piece of the attempt began, this one sends nothing more. The
    check marks the request's recipients as on the wire until their outcome is recorded. While requests wait
    (for tokens, for Novu), a background renewal extends the lease every third of it, so a live attempt is never
    taken for a dead one however long it runs; once the claim is lost (recovered, retracted, unpublished), no
    further request starts.
    """

    FIRST_REQUEST_GRACE_S = 1.0

    def __init__(
        self, repo: Repository, notification_id: int, attempt: int, lease_ms: int, *, acquired_at: float, piece: int
    ):
        self.repo = repo
        self.notification_id = notification_id
        self.attempt = attempt
        self.piece = piece
        self.lease_ms = lease_ms
        self.acquired_at = acquired_at
        self.lost = False
        self._first = True
        self._renewal: asyncio.Task[None] | None = None

    async def __aenter__(self) -> _Claim:
        self._renewal = asyncio.create_task(self._renew(), name=f"lease-{self.notification_id}-a{self.attempt}")
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._renewal is not None:
            self._renewal.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._renewal

    async def check(self, events: Sequence[RecipientEvent] = ()) -> bool:
        if self.lost:
            return False
        if self._first and time.monotonic() - self.acquired_at < self.FIRST_REQUEST_GRACE_S:
            self._first = False
            return True
        self._first = False
        on_the_wire = [e.recipient_id for e in events]
        if not await self.repo.fence(self.notification_id, self.attempt, self.lease_ms, self.piece, on_the_wire):
            self.lost = True
        return not self.lost

    async def _renew(self) -> None:
        period = max(0.5, self.lease_ms / 3000)
        while not self.lost:
            await asyncio.sleep(period)
            try:
                if not await self.repo.fence(self.notification_id, self.attempt, self.lease_ms, self.piece):
                    self.lost = True
            except Exception as exc:  # a missed renewal is retried next period; the fence before sending decides
                log.warning(
                    "could not renew a lease",
                    extra={"notification_id": self.notification_id, "error": type(exc).__name__},
                )


def _ledger_update(o: EventOutcome) -> DeliveryUpdate:
    status = (
        NotificationStatus.SENT
        if o.outcome == "acknowledged"
        else (NotificationStatus.PENDING if o.outcome == "config" else NotificationStatus.FAILED)
    )
    return DeliveryUpdate(
        recipient_id=o.recipient_id,
        status=status,
        novu_transaction_id=o.novu_transaction_id if o.outcome == "acknowledged" else None,
        idempotency_key=o.idempotency_key,
        key_generation=o.next_key_generation,
        http_status=o.http_status,
        error=o.error,
        unknown=o.outcome == "unknown",
    )
