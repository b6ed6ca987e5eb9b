"""Temporal-only worker options: the workflow sandbox, slots, caches, pollers and the shutdown grace.

Shared by the xnovu worker (xnovu/worker/composition.py) and the bench's ceiling worker
(xnovu/devtools/bench/ceiling.py), so that both are measured under the same conditions (docs/performance.md).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from temporalio.worker import PollerBehaviorAutoscaling
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from xnovu.config import Settings

#: In-flight activities get this long to finish after SIGTERM before the worker cancels them.
GRACEFUL_SHUTDOWN = timedelta(seconds=30)


#: Workflow code only touches xnovu's dataclasses; passing xnovu and its libraries through keeps the sandbox
#: from re-importing C extensions (asyncpg) and heavy stacks on every workflow run.
SANDBOX = SandboxedWorkflowRunner(
    restrictions=SandboxRestrictions.default.with_passthrough_modules(
        "xnovu",
        "asyncpg",
        "httpx",
        "httpcore",
        "pydantic",
        "pydantic_settings",
        "prometheus_client",
        "starlette",
        "uvicorn",
        "anyio",
        "rich",
        # Temporal's TracingInterceptor runs inside the sandbox; its context must be the one the worker sees.
        "opentelemetry",
    )
)


#: The poll workflows' own task queue is TEMPORAL_TASK_QUEUE with this suffix (docs/design.md "Task queues").
POLL_QUEUE_SUFFIX = "-polls"
#: Slots of the poll worker: a poll run is one short workflow task (its claim is a local activity in it), and at
#: most one chain per kind runs, plus the failed poll's recovery starts.
POLL_WORKER_SLOTS = 8


def poll_task_queue(queue: str) -> str:
    """Where the schedules start the poll workflows: a queue of their own, so a poll run's workflow task never waits
    behind the children's. Every child holds a workflow task slot while its send waits for Novu tokens, so under a
    backlog hundreds of child tasks queue on TEMPORAL_TASK_QUEUE, first come first served: a poll run started there
    waited 3 to 5 s for its first task (measured in the noisy-neighbour phase at 60 tokens/s), and every row it
    claimed, an urgent one too, waited with it."""
    return queue + POLL_QUEUE_SUFFIX


def child_task_queue(queue: str) -> str:
    """The children's queue of a poll running on `queue`: TEMPORAL_TASK_QUEUE (a poll started on that queue itself,
    by a schedule of an earlier release or a test, starts its children there too)."""
    return queue.removesuffix(POLL_QUEUE_SUFFIX)


def poll_worker_options(settings: Settings) -> dict[str, Any]:
    """The poll worker's options: the same as the main worker's, on the poll queue, with a few slots."""
    return {
        **worker_options(settings),
        "task_queue": poll_task_queue(settings.temporal_task_queue),
        "max_concurrent_activities": POLL_WORKER_SLOTS,
        "max_concurrent_local_activities": POLL_WORKER_SLOTS,
        "max_concurrent_workflow_tasks": POLL_WORKER_SLOTS,
        "max_cached_workflows": 2 * POLL_WORKER_SLOTS,
    }


def worker_options(settings: Settings) -> dict[str, Any]:
    """Worker options from settings, shared with the benchmark's ceiling worker so both are measured alike.

    Task pollers autoscale: with the SDK's fixed five, only one polls the queue where every new workflow's first
    task lands, and new workflows wait there behind it (measured: the ceiling went from ~50 to ~75 workflows/s).
    """
    return {
        "task_queue": settings.temporal_task_queue,
        "max_concurrent_activities": settings.temporal_max_concurrent_activities,
        "max_concurrent_local_activities": settings.temporal_max_concurrent_activities,
        "max_concurrent_workflow_tasks": settings.temporal_max_concurrent_workflows,
        "max_cached_workflows": settings.temporal_max_cached_workflows,
        "graceful_shutdown_timeout": GRACEFUL_SHUTDOWN,
        "workflow_runner": SANDBOX,
        "workflow_task_poller_behavior": PollerBehaviorAutoscaling(),
        "activity_task_poller_behavior": PollerBehaviorAutoscaling(),
    }
