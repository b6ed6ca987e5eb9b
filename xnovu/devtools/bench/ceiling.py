"""The bare-Temporal ceiling worker for `xnovu bench`: one trivial workflow running one local no-op activity, and
the no-op fan-out of the poll's shape that starts those workflows as children.

It runs as its own process (`python -m xnovu.devtools.bench.ceiling`), configured by the same environment variables as
`xnovu worker start` (TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE, TEMPORAL_TASK_QUEUE, TEMPORAL_MAX_CONCURRENT_*), and
with the same sandbox settings, so the ceiling and the real pipeline are measured under the same conditions (both
workflows here run outside the sandbox, as xnovu's poll and per-notification workflows do): one Python
process per worker, the same slot and cache limits, the same server.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from dataclasses import dataclass
from datetime import timedelta

from temporalio import activity, workflow
from temporalio.common import RetryPolicy
from temporalio.worker import Worker

from xnovu.devtools.bench.plan import FANOUT_BATCH, FANOUT_WINDOW

#: The workflow types the bench starts by name (it never imports this module's workflow classes).
CEILING_WORKFLOW = "BenchCeilingWorkflow"
FANOUT_WORKFLOW = "BenchFanoutWorkflow"

log = logging.getLogger(__name__)


@activity.defn(name="bench_noop")
async def noop() -> None:
    """Does nothing: the ceiling measures Temporal's own cost per workflow, not any work."""


@workflow.defn(name=CEILING_WORKFLOW, sandboxed=False)
class CeilingWorkflow:
    """One local activity, like `NotificationTriggerWorkflow` minus the trigger itself."""

    @workflow.run
    async def run(self) -> None:
        await workflow.execute_local_activity(
            noop,
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=RetryPolicy(maximum_attempts=3),
        )


@dataclass(frozen=True)
class FanoutInput:
    """Children `{prefix}{i}` for i in [done, total): this run starts the next FANOUT_BATCH of them."""

    prefix: str
    total: int
    done: int = 0


@workflow.defn(name=FANOUT_WORKFLOW, sandboxed=False)
class FanoutWorkflow:
    """`PollNotificationsWorkflow` (xnovu/temporal/workflows.py) without the work: one batch of FANOUT_BATCH child
    starts per run, deterministic ids, ABANDON, a sliding window of FANOUT_WINDOW starts in flight, continue-as-new
    while items remain. The children are pure `CeilingWorkflow`s (no search attributes, no memo): what this shape
    costs on this server and worker, with nothing of xnovu's own in it."""

    @workflow.run
    async def run(self, inp: FanoutInput) -> int:
        window = asyncio.Semaphore(FANOUT_WINDOW)
        end = min(inp.total, inp.done + FANOUT_BATCH)

        async def start(i: int) -> None:
            async with window:
                await workflow.start_child_workflow(
                    CEILING_WORKFLOW,
                    id=f"{inp.prefix}{i}",
                    task_queue=workflow.info().task_queue,
                    parent_close_policy=workflow.ParentClosePolicy.ABANDON,
                )

        await asyncio.gather(*(start(i) for i in range(inp.done, end)))
        if end < inp.total:
            workflow.continue_as_new(FanoutInput(inp.prefix, inp.total, end))
        return end


async def serve() -> None:
    """Run the ceiling worker until SIGTERM/SIGINT (settings from the environment, as the real worker)."""
    from xnovu.config import load_settings
    from xnovu.temporal.connection import connect_temporal
    from xnovu.temporal.options import worker_options

    settings = load_settings()
    client = await connect_temporal(settings)
    worker = Worker(
        client,
        workflows=[CeilingWorkflow, FanoutWorkflow],
        activities=[noop],
        **worker_options(settings),  # the same options as the xnovu worker: a fair ceiling
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    runner = asyncio.create_task(worker.run())
    waiter = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait({runner, waiter}, return_when=asyncio.FIRST_COMPLETED)
    if runner in done:
        runner.result()  # the worker died on its own: surface why
        return
    await worker.shutdown()
    await runner


def main() -> None:
    """Entry point of `python -m xnovu.devtools.bench.ceiling`."""
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(serve())


if __name__ == "__main__":
    # Run the copy imported under the real module name: classes defined in `__main__` would make the workflow
    # sandbox (which passes `xnovu` through) import this file a second time under another name.
    from xnovu.devtools.bench import ceiling as bench_ceiling

    bench_ceiling.main()
