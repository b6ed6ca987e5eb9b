"""What crosses Temporal for retention (docs/retention.md): the input and result of one step of a prune.

A prune run is a sequence of steps, each an activity of bounded length, so a worker shutdown or a retry costs at most
one step and the workflow's history stays small; the run itself (its counts, its lease) lives in Postgres
(`notify.xnovu_prune_run`), so a step only carries the run's id. Fields added later get defaults.
"""

# No `from __future__ import annotations`: Temporal's data converter decodes real annotations (xnovu/core/models.py).
from dataclasses import dataclass

#: The id of the Temporal Schedule that starts the prunes.
RETENTION_SCHEDULE_ID = "xnovu-retention"


@dataclass(frozen=True)
class PruneStepInput:
    """Continue prune run `run_id`, or begin one (None)."""

    run_id: int | None = None


@dataclass(frozen=True)
class PruneStepResult:
    """Where a run stands after one step."""

    run_id: int | None
    """None when no run began (see `skipped`)."""
    done: bool
    """Nothing older than the run's cutoffs is left (or the run stopped): the workflow ends."""
    rows: int = 0
    """Rows the run removed so far, all tables together."""
    skipped: str | None = None
    """Why this step pruned nothing: the Schedule is paused, or another prune holds the lease."""
