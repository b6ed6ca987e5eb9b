"""The one name for each notification status (docs/design.md "Lifecycle").

The values are the Postgres enum `shared_types.notification_status` (xnovu/db/migrations/0001_notify_schema.sql),
so a member compares equal to what the database returns; the per-recipient ledger
(`notify.ent_notification_delivery.status`) uses PENDING, SENT and FAILED of the same set.
"""

from enum import StrEnum


class NotificationStatus(StrEnum):
    """Where a notification is in its lifecycle: PENDING → PROCESSING → SENT | FAILED, or RETRACTED."""

    PENDING = "PENDING"
    """Waiting to be claimed (new, requeued, held back, or a claim given back before anything was sent)."""
    PROCESSING = "PROCESSING"
    """Claimed by attempt `attempts`; `next_attempt_at` is its lease deadline."""
    SENT = "SENT"
    """Every recipient acknowledged by Novu (terminal)."""
    FAILED = "FAILED"
    """Retried at `next_attempt_at`, or dead-lettered when `dead_lettered_at` is set."""
    RETRACTED = "RETRACTED"
    """Never to be sent (terminal)."""
