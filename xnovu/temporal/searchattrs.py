"""Search attributes xnovu registers at bootstrap and sets on every notification workflow (README "Operations")."""

from __future__ import annotations

from temporalio.common import Priority, SearchAttributeKey, SearchAttributePair, TypedSearchAttributes

from xnovu.core.priority import temporal_priority_key

NOTIFICATION_ID = SearchAttributeKey.for_int("XnovuNotificationId")
WORKFLOW_KEY = SearchAttributeKey.for_keyword("XnovuWorkflowKey")
ENTERPRISE_ID = SearchAttributeKey.for_keyword("XnovuEnterpriseId")
#: The notification's urgency (xnovu/core/priority.py: 0 normal, above 0 more urgent): `XnovuPriority > 0` in the
#: Web UI lists the urgent ones (docs/priority.md "Temporal priority and fairness keys").
PRIORITY = SearchAttributeKey.for_int("XnovuPriority")
#: Set on every FireRuleWorkflow (README "Rules"): find all fires of a rule with `XnovuRuleId = 7`.
RULE_ID = SearchAttributeKey.for_int("XnovuRuleId")
#: Set by Temporal on workflows a Schedule starts: the fire's nominal (scheduled) time.
SCHEDULED_START_TIME = SearchAttributeKey.for_datetime("TemporalScheduledStartTime")

ALL_KEYS = (NOTIFICATION_ID, WORKFLOW_KEY, ENTERPRISE_ID, RULE_ID, PRIORITY)


def for_notification(
    notification_id: int, workflow_key: str | None, enterprise_id: str | None, priority: int = 0
) -> TypedSearchAttributes:
    """The attributes of one notification workflow (unknown values are left out, not set to ""; the urgency is
    always set, 0 included, so `XnovuPriority = 0` finds the normal ones too)."""
    pairs: list[SearchAttributePair[int] | SearchAttributePair[str]] = [
        SearchAttributePair(NOTIFICATION_ID, notification_id),
        SearchAttributePair(PRIORITY, priority),
    ]
    if workflow_key:
        pairs.append(SearchAttributePair(WORKFLOW_KEY, workflow_key))
    if enterprise_id:
        pairs.append(SearchAttributePair(ENTERPRISE_ID, enterprise_id))
    return TypedSearchAttributes(pairs)


#: The fairness key of children whose row has no enterprise: they form one group (issue 17, "Rows without an
#: enterprise form one group"). Not a UUID, so it never collides with an enterprise's key.
NO_ENTERPRISE_KEY = "none"


def temporal_priority(priority: int, enterprise_id: str | None) -> Priority:
    """Temporal's `Priority` of one notification workflow: the priority key of its urgency (an urgent child
    overtakes queued children on the task queue) and its enterprise as the fairness key (used where the server has
    fairness on; `xnovu doctor` tells)."""
    return Priority(
        priority_key=temporal_priority_key(priority),
        fairness_key=(enterprise_id or NO_ENTERPRISE_KEY).lower()[:64],
    )


#: Characters of a notification's name shown in its workflow's memo (and carried by a claim): a producer's row may
#: hold megabytes there, and a payload over Temporal's 2 MB limit fails the poll's workflow task on every try.
MEMO_NAME_MAX = 200


def memo_for_notification(name: str | None) -> dict[str, str]:
    """The memo of one notification workflow: its name, cut to MEMO_NAME_MAX characters."""
    return {"notification": (name or "")[:MEMO_NAME_MAX]}


def for_rule(rule_id: int, enterprise_id: str | None) -> TypedSearchAttributes:
    """The attributes of a rule's fire workflows."""
    pairs: list[SearchAttributePair[int] | SearchAttributePair[str]] = [SearchAttributePair(RULE_ID, rule_id)]
    if enterprise_id:
        pairs.append(SearchAttributePair(ENTERPRISE_ID, enterprise_id))
    return TypedSearchAttributes(pairs)
