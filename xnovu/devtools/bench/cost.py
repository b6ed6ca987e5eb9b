"""What one workflow run costs Temporal, read from the event types of its history: visibility writes and billable
Temporal Cloud actions.

Pure (no I/O) so that the counting rules are unit-tested (tests/unit/test_bench_plan.py); docs/performance.md lists
the rules with their source. The bench fetches the histories (xnovu/devtools/bench/phases.py) and sums the runs of a
phase with `RunCost`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

#: Events that each count as one billable action (docs.temporal.io/cloud/actions, per event type). A run's own
#: WORKFLOW_EXECUTION_STARTED counts whether it was started by a client, a parent (the second action of a child start;
#: the first is the parent's INITIATED event), a continue-as-new (counted here, on the new run's STARTED event, not
#: on the old run's CONTINUED_AS_NEW event, as the Cloud UI does) or a schedule (see SCHEDULE_START_ACTIONS).
ONE_ACTION = frozenset(
    {
        "EVENT_TYPE_WORKFLOW_EXECUTION_STARTED",
        "EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_INITIATED",
        "EVENT_TYPE_ACTIVITY_TASK_SCHEDULED",
        "EVENT_TYPE_TIMER_STARTED",
        "EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED",
        "EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES",
        "EVENT_TYPE_WORKFLOW_EXECUTION_OPTIONS_UPDATED",
        "EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED",
        "EVENT_TYPE_NEXUS_OPERATION_SCHEDULED",
        "EVENT_TYPE_NEXUS_OPERATION_CANCEL_REQUESTED",
    }
)
#: A schedule's action costs three: two for the schedule start, one for the workflow it starts (that one is the
#: run's STARTED event above), so a run started by a schedule (or a schedule trigger) adds two.
SCHEDULE_START_ACTIONS = 2
#: Local activities are recorded as markers; every marker of one workflow task counts as one action together.
MARKER = "EVENT_TYPE_MARKER_RECORDED"
#: The end of a workflow task: the commands it completed with (markers among them) are the events after it.
TASK_COMPLETED = "EVENT_TYPE_WORKFLOW_TASK_COMPLETED"

#: A run's visibility record is written when it starts and when it closes (a continue-as-new closes the run).
OPENS = frozenset({"EVENT_TYPE_WORKFLOW_EXECUTION_STARTED"})
CLOSES = frozenset(
    {
        "EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED",
        "EVENT_TYPE_WORKFLOW_EXECUTION_FAILED",
        "EVENT_TYPE_WORKFLOW_EXECUTION_TIMED_OUT",
        "EVENT_TYPE_WORKFLOW_EXECUTION_CANCELED",
        "EVENT_TYPE_WORKFLOW_EXECUTION_TERMINATED",
        "EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW",
    }
)
#: ...and again whenever the run changes what visibility shows of it: search attributes or memo.
REWRITES = frozenset({"EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES", "EVENT_TYPE_WORKFLOW_PROPERTIES_MODIFIED"})


def count_actions(event_types: Sequence[str], *, scheduled: bool = False) -> int:
    """Billable Temporal Cloud actions of one run, estimated from its history's event types, in order.

    `scheduled`: the run was started by a schedule (its first event carries TemporalScheduledById). Activity retries
    (the `attempt` of ACTIVITY_TASK_STARTED), local-activity retries and workflow-task heartbeats are in event
    attributes, not types, and are not counted: an estimate of a healthy run, as the Cloud UI's own estimate is.
    """
    actions = sum(1 for t in event_types if t in ONE_ACTION)
    marker_in_task = False
    for t in event_types:
        if t == TASK_COMPLETED:
            marker_in_task = False
        elif t == MARKER and not marker_in_task:
            actions += 1
            marker_in_task = True
    return actions + (SCHEDULE_START_ACTIONS if scheduled else 0)


def count_visibility_updates(event_types: Iterable[str]) -> int:
    """Writes of the run's visibility record: its start, its close, and each search-attribute or memo change."""
    return sum(1 for t in event_types if t in OPENS or t in CLOSES or t in REWRITES)


@dataclass
class RunCost:
    """The sum over the runs of a phase (children, polls or fan-out parents, continue-as-new runs each counted)."""

    runs: int = 0
    history_events: int = 0
    visibility_updates: int = 0
    actions: int = 0

    def add(self, event_types: Sequence[str], *, scheduled: bool = False) -> None:
        self.runs += 1
        self.history_events += len(event_types)
        self.visibility_updates += count_visibility_updates(event_types)
        self.actions += count_actions(event_types, scheduled=scheduled)


#: Persistence operations that write, by name prefix. The dev server keeps everything in one SQLite file written
#: through one connection, so the writes a notification causes, not CPU, are what bound its rate there (README
#: "Performance"); on a cluster they are what its database must absorb.
WRITE_PREFIXES = ("Create", "Update", "Upsert", "Append", "Set", "Save", "Delete", "ConflictResolve", "Complete")
WRITE_PREFIXES_RANGE = "RangeComplete"


def is_write(operation: str) -> bool:
    """Whether a Temporal persistence operation (the `operation` label of `persistence_requests`) writes."""
    return operation.startswith(WRITE_PREFIXES) or operation.startswith(WRITE_PREFIXES_RANGE)


@dataclass(frozen=True)
class Persistence:
    """The Temporal server's persistence counters at one moment (its Prometheus `/metrics`), summed per operation."""

    requests: dict[str, float]
    seconds: dict[str, float]

    @classmethod
    def parse(cls, samples: Iterable[tuple[str, dict[str, str], float]]) -> Persistence:
        """From (sample name, labels, value) triples: `persistence_requests` and `persistence_latency_sum`."""
        requests: dict[str, float] = {}
        seconds: dict[str, float] = {}
        for name, labels, value in samples:
            op = labels.get("operation")
            if op is None:
                continue
            if name in ("persistence_requests", "persistence_requests_total"):
                requests[op] = requests.get(op, 0.0) + value
            elif name == "persistence_latency_sum":
                seconds[op] = seconds.get(op, 0.0) + value
        return cls(requests, seconds)

    def since(self, before: Persistence) -> Persistence:
        """What happened between `before` and this snapshot."""
        return Persistence(
            {op: n - before.requests.get(op, 0.0) for op, n in self.requests.items()},
            {op: s - before.seconds.get(op, 0.0) for op, s in self.seconds.items()},
        )

    @property
    def writes(self) -> float:
        return sum(n for op, n in self.requests.items() if is_write(op))

    @property
    def busy_s(self) -> float:
        """Time spent in persistence calls, all operations (concurrent calls add up)."""
        return sum(self.seconds.values())
