"""Activities: the only place where the Temporal side touches Postgres and Novu.

Bound methods of one object built with its dependencies (repository, trigger core), as in Temporal's samples.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import timedelta

from temporalio import activity
from temporalio.exceptions import ApplicationError

from xnovu.db.repository import Repository
from xnovu.errors import NovuConfigurationError
from xnovu.metrics import METRICS
from xnovu.models import ClaimBatch, MultipleTriggerRequest, PollKind, TriggerRequest, TriggerResult
from xnovu.trigger import NotificationProcessor

#: How long a worker waits before retrying when Novu refuses the key: long enough not to hammer Novu,
#: short enough that a rotated key takes effect quickly.
CONFIG_ERROR_RETRY = timedelta(seconds=30)


@dataclass(frozen=True)
class PollSettings:
    """What the claim activity needs from Settings (workflows never read settings)."""

    batch_size: int
    lease_ms: int
    scheduled_lookahead_ms: int
    enterprise_id: str | None = None
    trigger_concurrency: int = 10


@dataclass
class PollClock:
    """When each poll kind last claimed (for /status)."""

    last_poll: dict[str, float] = field(default_factory=dict)


class XnovuActivities:
    """Claim, trigger and batch-trigger activities."""

    def __init__(self, repo: Repository, processor: NotificationProcessor, poll: PollSettings) -> None:
        self.repo = repo
        self.processor = processor
        self.poll = poll
        self.clock = PollClock()

    @activity.defn(name="claim_notifications")
    async def claim_notifications(self, kind: PollKind) -> ClaimBatch:
        """Claim one batch for a poll kind (compare-and-set in Postgres, SKIP LOCKED between workers)."""
        rows = await self.repo.claim(
            kind,
            batch_size=self.poll.batch_size,
            lease_ms=self.poll.lease_ms,
            lookahead_ms=self.poll.scheduled_lookahead_ms,
            enterprise_id=self.poll.enterprise_id,
        )
        self.clock.last_poll[kind.value] = time.time()
        METRICS.last_poll.labels(kind=kind.value).set(self.clock.last_poll[kind.value])
        METRICS.poll_batch_size.labels(kind=kind.value).observe(len(rows))
        if rows:
            activity.logger.info("claimed batch", extra={"kind": kind.value, "count": len(rows)})
        return ClaimBatch(rows=rows, batch_size=self.poll.batch_size)

    @activity.defn(name="trigger_notification_by_id")
    async def trigger_notification_by_id(self, request: TriggerRequest) -> TriggerResult:
        """One attempt at one notification (see xnovu.trigger)."""
        started = time.perf_counter()
        try:
            result = await self.processor.process(request.notification_id, request.attempt)
        except NovuConfigurationError as exc:
            METRICS.novu_configuration_errors.inc()
            activity.logger.error("Novu refused the API key", extra={"notification_id": request.notification_id})
            raise ApplicationError(
                str(exc), type="NovuConfigurationError", next_retry_delay=CONFIG_ERROR_RETRY
            ) from None
        METRICS.observe_result(result, time.perf_counter() - started)
        return result

    @activity.defn(name="trigger_multiple_notifications_by_id")
    async def trigger_multiple_notifications_by_id(self, request: MultipleTriggerRequest) -> list[TriggerResult]:
        """Many notifications in one activity, at most `concurrency` at a time; each claims its next attempt."""
        concurrency = request.concurrency or self.poll.trigger_concurrency
        started = time.perf_counter()
        try:
            results = await self.processor.process_many(request.notification_ids, concurrency)
        except NovuConfigurationError as exc:
            METRICS.novu_configuration_errors.inc()
            raise ApplicationError(
                str(exc), type="NovuConfigurationError", next_retry_delay=CONFIG_ERROR_RETRY
            ) from None
        for r in results:
            METRICS.observe_result(r, (time.perf_counter() - started) / max(1, len(results)))
        return results
