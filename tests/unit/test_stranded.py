"""When a schedule's open run counts as stranded (xnovu/temporal/stranded.py): never on the queue its schedule
targets, never before its workflow task waited STRANDED_AFTER, never once a worker polled the queue since."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from xnovu.temporal.stranded import STRANDED_AFTER, is_stranded

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
QUEUED = NOW - STRANDED_AFTER  # the task has waited exactly STRANDED_AFTER


@pytest.mark.parametrize(
    ("queue", "queued", "last_poll", "stranded"),
    [
        ("tq-polls", QUEUED, None, True),  # the rollback: no poller listed any more
        ("tq-polls", QUEUED, QUEUED - timedelta(seconds=5), True),  # a stopped worker's last poll, still listed
        ("tq", QUEUED, None, False),  # the queue its schedule targets: a worker still starting
        ("tq-polls", None, None, False),  # no task waiting: it runs, or sleeps on a timer
        ("tq-polls", QUEUED + timedelta(seconds=1), None, False),  # just started: waited less than STRANDED_AFTER
        ("tq-polls", QUEUED, QUEUED + timedelta(seconds=1), False),  # a worker polled the queue since
    ],
    ids=["nobody", "stale-poller", "target-queue", "no-task", "just-started", "polled-since"],
)
def test_a_run_is_stranded_only_off_target_unpolled_and_waiting(
    queue: str, queued: datetime | None, last_poll: datetime | None, stranded: bool
) -> None:
    got = is_stranded(
        task_queue=queue,
        target_queue="tq",
        task_scheduled_at=queued,
        last_poll_at=last_poll,
        now=NOW,
        stranded_after=STRANDED_AFTER,
    )
    assert got is stranded
