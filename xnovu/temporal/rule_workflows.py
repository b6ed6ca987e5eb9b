"""Rule workflows (README "Rules"): the sync the `xnovu-rules-sync` Schedule starts, and one fire of a rule.

Deterministic code only: no I/O, no settings, no wall clock (workflow.now()).
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from xnovu.core.rules import FireRequest, FireResult, SyncReport, fire_time
    from xnovu.temporal import searchattrs
    from xnovu.temporal.rule_activities import RuleActivities

#: One sync makes a few Temporal calls per rule; minutes leave room for thousands of rules.
SYNC_TIMEOUT = timedelta(minutes=5)
#: A failed sync is retried a few times, then the next tick of xnovu-rules-sync tries again.
SYNC_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30), maximum_attempts=5
)
FIRE_TIMEOUT = timedelta(seconds=30)
#: The insert is idempotent per (rule, time), so retrying until the database heals never makes a second row.
FIRE_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=0,
    non_retryable_error_types=["BadFireRequest"],
)


@workflow.defn(name="SyncRulesWorkflow")
class SyncRulesWorkflow:
    """Reconciles one Schedule per CRON rule with the rules table."""

    @workflow.run
    async def run(self) -> SyncReport:
        return await workflow.execute_activity_method(
            RuleActivities.sync_rules, start_to_close_timeout=SYNC_TIMEOUT, retry_policy=SYNC_RETRY
        )


@workflow.defn(name="FireRuleWorkflow")
class FireRuleWorkflow:
    """One fire of a rule: inserts the notification of (rule, scheduled time); the polls then send it."""

    @workflow.run
    async def run(self, request: FireRequest) -> FireResult:
        when = request.scheduled_time
        if when is None:
            # Started by the rule's Schedule: Temporal sets the fire's nominal time as a search attribute.
            when = workflow.info().typed_search_attributes.get(searchattrs.SCHEDULED_START_TIME)
        if when is None:
            when = workflow.info().start_time
        return await workflow.execute_activity_method(
            RuleActivities.fire_rule,
            FireRequest(request.rule_id, fire_time(when)),
            start_to_close_timeout=FIRE_TIMEOUT,
            retry_policy=FIRE_RETRY,
        )


RULE_WORKFLOWS = [SyncRulesWorkflow, FireRuleWorkflow]
