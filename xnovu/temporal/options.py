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
