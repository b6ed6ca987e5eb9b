"""A notification's urgency and what it maps to in Temporal (docs/priority.md).

The outbox carries priority as `ent_notification.typ_notification_priority_id` → `typ_notification_priority.sort_order`,
whose meaning is the data owner's: the original schema says "higher value can mean higher priority". xnovu reduces it
to one integer, the *urgency*: 0 is normal (a row with no priority, or one whose sort_order is the configured normal),
above 0 more urgent, below 0 less. Claims order due rows by urgency first (I8), and the child workflow carries it as
Temporal's priority key so an urgent child also overtakes queued children on the task queue.

Pure functions only: the database computes the stored urgency with the same rule (see the migration that adds it).
"""

from __future__ import annotations

from enum import StrEnum

#: Temporal's priority keys run from 1 (most urgent) to 5 by default; 3 is what a workflow without a key gets.
TEMPORAL_PRIORITY_KEYS = 5
TEMPORAL_DEFAULT_KEY = 3
#: The urgency is clamped to +-URGENCY_LIMIT (the SQL function `notify.xnovu_urgency` clamps alike): sort_order and
#: the normal are any 32-bit integers, whose difference may not fit the urgency's integer column. A million keeps
#: every sort_order of any realistic scale apart; beyond it, sort_orders share the extreme urgency.
URGENCY_LIMIT = 1_000_000
#: typ_notification_priority.sort_order is a 32-bit integer: the normal is one of its values.
SORT_ORDER_MIN, SORT_ORDER_MAX = -(2**31), 2**31 - 1


class PriorityOrder(StrEnum):
    """Which way `sort_order` points."""

    HIGHER_FIRST = "higher-first"
    """A higher sort_order is more urgent (the original schema's comment)."""
    LOWER_FIRST = "lower-first"
    """A lower sort_order is more urgent (1 = first)."""


def urgency(sort_order: int | None, *, order: PriorityOrder = PriorityOrder.HIGHER_FIRST, normal: int = 0) -> int:
    """The urgency of a row whose priority has `sort_order` (None: the row has no priority, so it is normal)."""
    if sort_order is None:
        return 0
    delta = sort_order - normal
    level = delta if order is PriorityOrder.HIGHER_FIRST else -delta
    return max(-URGENCY_LIMIT, min(URGENCY_LIMIT, level))


def sort_order_in_range(value: int) -> bool:
    """Whether `value` can be a sort_order (and so the normal one)."""
    return SORT_ORDER_MIN <= value <= SORT_ORDER_MAX


def temporal_priority_key(level: int) -> int:
    """Temporal's priority key for an urgency: normal is the server's default (3), each step up or down moves one
    key, clamped to 1..5 (two levels above normal and two below are told apart; beyond that they share a key, and
    the claim order, which is exact, has already put them first)."""
    return min(TEMPORAL_PRIORITY_KEYS, max(1, TEMPORAL_DEFAULT_KEY - level))
