"""Rule activities (README "Rules"): the sync that reconciles Schedules and the fire that inserts a notification."""

from __future__ import annotations

from temporalio import activity
from temporalio.client import Client
from temporalio.exceptions import ApplicationError

from xnovu.core.rules import (
    FireRequest,
    FireResult,
    SyncReport,
    fire_content,
    fire_time,
    notification_name,
    why_not_fire,
)
from xnovu.db.rules import RuleRepository
from xnovu.temporal.rules import RuleScheduleConfig, reconcile


class RuleActivities:
    """Bound to the worker's repository and Temporal client, as in Temporal's samples."""

    def __init__(self, repo: RuleRepository, client: Client, cfg: RuleScheduleConfig) -> None:
        self.repo = repo
        self.client = client
        self.cfg = cfg

    @activity.defn(name="sync_rules")
    async def sync_rules(self) -> SyncReport:
        """Reconcile every rule Schedule with the rules table (idempotent; see xnovu.temporal.rules)."""
        report = await reconcile(self.client, self.repo, self.cfg)
        if report.created or report.updated or report.paused or report.resumed or report.deleted:
            activity.logger.info(
                "rules synced",
                # Keys prefixed: `created` is a LogRecord attribute, which logging refuses to overwrite.
                extra={
                    "schedules_created": report.created,
                    "schedules_updated": report.updated,
                    "schedules_paused": report.paused,
                    "schedules_resumed": report.resumed,
                    "schedules_deleted": report.deleted,
                    "problems": len(report.problems),
                },
            )
        return report

    @activity.defn(name="fire_rule")
    async def fire_rule(self, request: FireRequest) -> FireResult:
        """Insert the one notification of (rule, scheduled time); a repeat finds it and inserts nothing."""
        if request.scheduled_time is None:
            raise ApplicationError("a fire needs its scheduled time", type="BadFireRequest", non_retryable=True)
        when = fire_time(request.scheduled_time)
        rule = await self.repo.get(request.rule_id)
        if rule is None:
            gone = f"rule {request.rule_id} no longer exists (its Schedule goes at the next sync)"
            activity.logger.warning("rule fire skipped", extra={"rule_id": request.rule_id, "reason": gone})
            return FireResult(request.rule_id, when, reason=gone)
        reason = why_not_fire(rule)
        content, problem = fire_content(rule.rule_payload)
        if reason is not None or content is None:
            reason = reason or problem
            activity.logger.warning("rule fire skipped", extra={"rule_id": rule.id, "reason": reason})
            return FireResult(rule.id, when, reason=reason)
        outcome = await self.repo.fire(rule, when, notification_name(rule, when), content)
        activity.logger.info(
            "rule fired" if outcome.created else "rule fire already made its notification",
            extra={"rule_id": rule.id, "scheduled_time": when.isoformat(), "notification_id": outcome.notification_id},
        )
        return FireResult(rule.id, when, outcome.notification_id, outcome.created)
