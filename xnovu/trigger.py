"""The trigger core: one attempt at one notification, from the outbox row to Novu and back.

    load row → I1 checks → claim attempt (compare-and-set) → ledger → Novu for unacknowledged recipients
    → record per-recipient outcomes → finalize SENT | FAILED (retry with backoff) | dead-letter

It knows nothing of Temporal: activities call it, and so can a user's own code.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from xnovu.db.errors import is_transient_db_error
from xnovu.db.repository import DeliveryUpdate, NotificationRow, Repository, Undecodable
from xnovu.errors import NovuConfigurationError
from xnovu.models import Outcome, RecipientResult, TriggerResult
from xnovu.novu.client import EventOutcome, NovuClient, RecipientEvent, transaction_id_for

log = logging.getLogger(__name__)

#: Novu rejects an event whose body exceeds 512 KB (413); checked before sending so the row fails alone (I5).
MAX_PAYLOAD_BYTES = 524_288
#: Room for the recipient id and transactionId that each event adds to the body.
EVENT_OVERHEAD_BYTES = 160
#: How far in the future a send time may be and still count as due (clock skew between DB and worker).
SCHEDULE_TOLERANCE = timedelta(seconds=2)


def retry_delay_ms(attempt: int, base_ms: int, max_ms: int) -> int:
    """Exponential backoff before retry number `attempt` + 1: base·2^(attempt-1), capped at max."""
    if attempt < 1:
        return min(base_ms, max_ms)
    return int(min(max_ms, base_ms * 2 ** min(attempt - 1, 62)))


def notification_block_reason(row: NotificationRow, now: datetime) -> str | None:
    """Why the notification itself must not be sent now (I1), or None."""
    if row.status == "RETRACTED":
        why = f": {row.retraction_reason}" if row.retraction_reason else ""
        return f"notification {row.id} was retracted{why}"
    if row.publish_status != "PUBLISH":
        return f"notification {row.id} is {row.publish_status}, only PUBLISH is sent"
    if row.deactivated:
        return f"notification {row.id} is deactivated"
    if row.scheduled_for is not None and row.scheduled_for > now + SCHEDULE_TOLERANCE:
        return f"notification {row.id} is scheduled for {row.scheduled_for.isoformat()}; it is sent then"
    return None


def workflow_block_reason(row: NotificationRow) -> str | None:
    """Why the row's Novu workflow makes it unsendable (permanent: dead-letter), or None."""
    if row.workflow_key is None:
        return f"notification {row.id} points at a workflow that does not exist"
    if row.workflow_publish_status != "PUBLISH":
        return f"workflow {row.workflow_key!r} is {row.workflow_publish_status}, only PUBLISH is sent"
    if row.workflow_deactivated:
        return f"workflow {row.workflow_key!r} is deactivated"
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

    async def process(self, notification_id: int, attempt: int | None = None) -> TriggerResult:
        """One attempt: `attempt` is the attempt number this caller owns, or None to claim the next one.

        Raises NovuConfigurationError (Novu refused the key) after recording what was acknowledged: the row
        keeps its claim and attempt count, so fixing the key lets the same attempt finish.
        """
        if not 0 < notification_id < 2**63:  # bigint identity: anything else cannot exist
            return TriggerResult(
                notification_id, Outcome.REJECTED, reason=f"notification {notification_id} does not exist"
            )
        row = await self.repo.load(notification_id)
        if row is None:
            return TriggerResult(
                notification_id, Outcome.REJECTED, reason=f"notification {notification_id} does not exist"
            )
        if row.status == "SENT":
            return self._skipped(row, f"notification {row.id} was already sent")

        reason = notification_block_reason(row, self.clock())
        if reason is not None:
            row_status = row.status
            if attempt is not None and row.status == "PROCESSING" and row.attempts == attempt:
                # Our claim, but unpublished/deactivated/rescheduled meanwhile: give the row back as PENDING.
                await self.repo.release(row.id, attempt, self._details_error(reason, attempt, None, False))
                row_status = "PENDING"
            log.info("notification rejected", extra={"notification_id": row.id, "reason": reason})
            return TriggerResult(row.id, Outcome.REJECTED, row_status, reason=reason, attempt=attempt)

        if row.dead_lettered_at is not None and row.status == "FAILED":
            return TriggerResult(
                row.id,
                Outcome.REJECTED,
                row.status,
                attempt=row.attempts,
                reason=f"notification {row.id} is dead-lettered; requeue it with `xnovu dlq requeue {row.id}`",
            )

        if attempt is None:
            attempt = await self.repo.acquire_next(row.id, self.lease_ms)
            acquired = attempt is not None
        else:
            acquired = await self.repo.acquire(row.id, attempt, self.lease_ms)
        if not acquired or attempt is None:
            return await self._not_acquired(row.id, attempt)

        try:
            return await self._send(row, attempt)
        except NovuConfigurationError:
            raise
        except Exception as exc:
            if is_transient_db_error(exc):
                raise  # the database went away: retried until it is back (the claim holds the row)
            # A bug or a row we could not foresee: this row fails alone, readable, instead of retrying forever (I5).
            log.exception("unexpected error processing a notification", extra={"notification_id": row.id})
            return await self._dead_letter(row, attempt, f"unexpected error: {type(exc).__name__}: {exc}", [])

    async def _not_acquired(self, notification_id: int, attempt: int | None) -> TriggerResult:
        """Explain why the claim failed, from the row as it is now."""
        row = await self.repo.load(notification_id)
        if row is None:
            return TriggerResult(
                notification_id, Outcome.REJECTED, reason=f"notification {notification_id} does not exist"
            )
        reason = notification_block_reason(row, self.clock())
        if reason is not None:
            return TriggerResult(row.id, Outcome.REJECTED, row.status, reason=reason, attempt=attempt)
        if row.status == "PROCESSING":
            return self._skipped(
                row, f"attempt {row.attempts} (workflow notification-{row.id}-a{row.attempts}) is processing it"
            )
        if row.status == "SENT":
            return self._skipped(row, f"notification {row.id} was already sent")
        return self._skipped(row, f"attempt {attempt} is stale: the row is {row.status} at attempt {row.attempts}")

    @staticmethod
    def _skipped(row: NotificationRow, reason: str) -> TriggerResult:
        return TriggerResult(row.id, Outcome.SKIPPED, row.status, reason=reason, attempt=row.attempts)

    async def _send(self, row: NotificationRow, attempt: int) -> TriggerResult:
        permanent = workflow_block_reason(row) or malformed_reason(row)
        if permanent is None and attempt > self.max_attempts:
            permanent = f"gave up after {self.max_attempts} attempts"
        if permanent is not None:
            return await self._dead_letter(row, attempt, permanent, [])

        recipients = unique_recipients(row.recipients)
        ledger = await self.repo.deliveries(row.id, recipients)
        pending = [r for r in recipients if ledger[r].status != "SENT"]
        assert row.workflow_key is not None  # checked by workflow_block_reason
        outcomes: dict[str, EventOutcome] = {}
        if pending:
            sent = await self.novu.trigger(
                workflow_key=row.workflow_key,
                payload=row.payload,
                overrides=row.overrides,
                events=[RecipientEvent(r, transaction_id_for(row.id, r), ledger[r].key_generation) for r in pending],
                concurrency=self.request_concurrency,
            )
            outcomes = {o.recipient_id: o for o in sent}
            await self.repo.record_outcomes(row.id, [_ledger_update(o) for o in sent])
            config = next((o for o in sent if o.outcome == "config"), None)
            if config is not None:
                raise NovuConfigurationError(config.error or "Novu rejected the API key; check NOVU_SECRET_KEY")

        results: list[RecipientResult] = []
        for r in recipients:
            o = outcomes.get(r)
            if o is None:  # acknowledged in an earlier attempt
                results.append(RecipientResult(r, True, ledger[r].novu_transaction_id or transaction_id_for(row.id, r)))
            elif o.outcome == "acknowledged":
                results.append(RecipientResult(r, True, o.novu_transaction_id or o.transaction_id))
            else:
                results.append(RecipientResult(r, False, o.transaction_id, o.error))

        failed = [outcomes[r.recipient_id] for r in results if not r.success]
        if not failed:
            details = self._details(row, results, attempt)
            ok = await self.repo.finalize(row.id, attempt, status="SENT", error_details=details)
            return self._finalized(row, attempt, ok, Outcome.SENT, "SENT", results, None, None)

        first = failed[0]
        summary = f"{len(failed)} of {len(results)} recipients failed; first: {first.error or first.outcome}"
        if any(o.outcome == "permanent" for o in failed):
            return await self._dead_letter(row, attempt, f"Novu rejected the notification: {summary}", results)
        if attempt >= self.max_attempts:
            return await self._dead_letter(row, attempt, f"gave up after {attempt} attempts: {summary}", results)

        next_at = self.clock() + timedelta(
            milliseconds=retry_delay_ms(attempt, self.backoff_base_ms, self.backoff_max_ms)
        )
        details = self._details(row, results, attempt) | self._details_error(summary, attempt, next_at, False)
        ok = await self.repo.finalize(row.id, attempt, status="FAILED", error_details=details, next_attempt_at=next_at)
        return self._finalized(row, attempt, ok, Outcome.RETRY, "FAILED", results, summary, next_at)

    async def _dead_letter(
        self, row: NotificationRow, attempt: int, reason: str, results: list[RecipientResult]
    ) -> TriggerResult:
        details = self._details(row, results, attempt) | self._details_error(reason, attempt, None, True)
        ok = await self.repo.finalize(row.id, attempt, status="FAILED", error_details=details, dead_letter=True)
        log.warning(
            "notification dead-lettered", extra={"notification_id": row.id, "attempt": attempt, "reason": reason}
        )
        return self._finalized(row, attempt, ok, Outcome.DEAD_LETTERED, "FAILED", results, reason, None)

    def _finalized(
        self,
        row: NotificationRow,
        attempt: int,
        owned: bool,
        outcome: Outcome,
        status: str,
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
            success_count=sum(r.success for r in results),
            total_recipients=len(results),
            novu_transaction_ids=[r.transaction_id for r in results if r.success and r.transaction_id],
            results=results,
            next_attempt_at=next_at,
        )

    def _details(self, row: NotificationRow, results: list[RecipientResult], attempt: int) -> dict[str, Any]:
        """Seed-compatible error_details (SPEC §2)."""
        return {
            "novu_transaction_ids": [r.transaction_id for r in results if r.success],
            "results": [
                {"recipientId": r.recipient_id, "success": r.success}
                | ({"transactionId": r.transaction_id} if r.transaction_id else {})
                | ({"error": r.error} if r.error else {})
                for r in results
            ],
            "successCount": sum(r.success for r in results),
            "totalRecipients": len(results),
            "timestamp": self.clock().isoformat(),
            "attempt": attempt,
        }

    def _details_error(self, error: str, attempt: int, next_at: datetime | None, dead: bool) -> dict[str, Any]:
        return {
            "error": error,
            "attempt": attempt,
            "next_attempt_at": next_at.isoformat() if next_at else None,
            "dead_letter": dead,
            "timestamp": self.clock().isoformat(),
        }


def _ledger_update(o: EventOutcome) -> DeliveryUpdate:
    status = "SENT" if o.outcome == "acknowledged" else ("PENDING" if o.outcome == "config" else "FAILED")
    return DeliveryUpdate(
        recipient_id=o.recipient_id,
        status=status,
        novu_transaction_id=o.novu_transaction_id if o.outcome == "acknowledged" else None,
        idempotency_key=o.idempotency_key,
        key_generation=o.next_key_generation,
        http_status=o.http_status,
        error=o.error,
    )
