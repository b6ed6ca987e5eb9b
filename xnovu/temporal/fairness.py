"""Does the Temporal server dispatch by fairness key? (`xnovu doctor`, docs/priority.md "Temporal priority and
fairness keys").

No API says so. Fairness is switched on by the server's dynamic config (`matching.enableFairness`, per namespace or
task queue) or, on Temporal Cloud, by the namespace's Fairness setting, and neither `GetSystemInfo` (capabilities)
nor `DescribeTaskQueue` (stats, stats by priority key, config) answers differently with it on or off (checked
against the dev server, Temporal 1.32, both ways). So the doctor measures it: on a task queue of its own that no
worker polls, it starts `NORMAL` probe workflows with one fairness key, then `OTHER` with a second, takes their
first workflow tasks itself, and looks where the second key's tasks came: oldest first (no fairness) puts them
last, fairness interleaves them from the start. The probe workflows are terminated at once; they never run code.
Each also has an execution timeout (`PROBE_TIMEOUT`), so a doctor killed mid-probe (a cron job's `timeout`, Ctrl-C
twice) leaves none open for ever: the server closes them itself.

A task queue has several partitions, each dispatching on its own, so the order is noisy: the decision uses the mean
position of the second key's tasks, and says "unclear" between the two bounds. Measured on the dev server (Temporal
1.32, four partitions), ten probes each: 0.67 to 0.76 oldest first, 0.27 to 0.36 with fairness (with half as many
tasks the two came as close as 0.57 and 0.42). A probe takes about 5 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from dataclasses import dataclass
from datetime import timedelta

from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import GetSystemInfoRequest, PollWorkflowTaskQueueRequest
from temporalio.client import Client
from temporalio.common import Priority
from temporalio.service import RPCError

NORMAL = 96
OTHER = 24
#: Mean position (0 first, 1 last) of the second key's tasks: at most ON means fairness, at least OFF oldest first.
ON = 0.48
OFF = 0.58
PROBE_TYPE = "XnovuFairnessProbe"
POLL_TIMEOUT_S = 10.0
#: How long a probe workflow may stay open if the doctor dies before terminating it: far above a probe's ~5 s (and
#: the doctor's 60 s bound on it), short enough that a killed doctor leaves nothing behind for long.
PROBE_TIMEOUT = timedelta(minutes=5)


@dataclass(frozen=True)
class FairnessProbe:
    state: str
    """"on", "off" or "unclear"."""
    mean_position: float | None
    server_version: str


async def probe_fairness(client: Client, *, normal: int = NORMAL, other: int = OTHER) -> FairnessProbe:
    """Measure whether the server dispatches by fairness key (see the module's docstring)."""
    info = await client.workflow_service.get_system_info(GetSystemInfoRequest())
    queue = f"xnovu-fairness-probe-{uuid.uuid4().hex[:10]}"
    ids: list[str] = []
    try:
        for i, key in enumerate(["a"] * normal + ["b"] * other):
            # One at a time: the second key's tasks must be the newest on every partition.
            wid = f"{queue}-{i}-{key}"
            await client.start_workflow(
                PROBE_TYPE,
                id=wid,
                task_queue=queue,
                priority=Priority(fairness_key=key),
                static_summary="xnovu doctor",
                execution_timeout=PROBE_TIMEOUT,
            )
            ids.append(wid)
        order: list[str] = []
        for _ in ids:
            task = await asyncio.wait_for(
                client.workflow_service.poll_workflow_task_queue(
                    PollWorkflowTaskQueueRequest(
                        namespace=client.namespace, task_queue=TaskQueue(name=queue), identity="xnovu doctor"
                    )
                ),
                POLL_TIMEOUT_S,
            )
            order.append(task.workflow_execution.workflow_id.rsplit("-", 1)[-1])
    except (TimeoutError, RPCError):
        return FairnessProbe("unclear", None, info.server_version)
    finally:
        await _terminate(client, ids)
    positions = [i / (len(order) - 1) for i, key in enumerate(order) if key == "b"]
    mean = sum(positions) / len(positions)
    state = "on" if mean <= ON else "off" if mean >= OFF else "unclear"
    return FairnessProbe(state, mean, info.server_version)


async def _terminate(client: Client, ids: list[str]) -> None:
    gate = asyncio.Semaphore(20)

    async def one(wid: str) -> None:
        async with gate:
            with contextlib.suppress(RPCError):
                await client.get_workflow_handle(wid).terminate(reason="xnovu doctor: fairness probe done")

    await asyncio.gather(*(one(w) for w in ids))
