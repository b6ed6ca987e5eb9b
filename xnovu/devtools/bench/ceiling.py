"""The bare-Temporal ceiling worker for `xnovu bench`: one trivial workflow running one local no-op activity.

It runs as its own process (`python -m xnovu.devtools.bench.ceiling`), configured by the same environment variables as
`xnovu worker start` (TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE, TEMPORAL_TASK_QUEUE, TEMPORAL_MAX_CONCURRENT_*), and
with the same sandbox, so the ceiling and the real pipeline are measured under the same conditions: one Python
process per worker, the same slot and cache limits, the same server.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from datetime import timedelta

from temporalio import activity, workflow
from temporalio.common import RetryPolicy
from temporalio.worker import Worker

#: The workflow type the bench starts by name (it never imports this module's classes).
CEILING_WORKFLOW = "BenchCeilingWorkflow"

log = logging.getLogger(__name__)


@activity.defn(name="bench_noop")
async def noop() -> None:
    """Does nothing: the ceiling measures Temporal's own cost per workflow, not any work."""


@workflow.defn(name=CEILING_WORKFLOW)
class CeilingWorkflow:
    """One local activity, like `NotificationTriggerWorkflow` minus the trigger itself."""

    @workflow.run
    async def run(self) -> None:
        await workflow.execute_local_activity(
            noop,
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=RetryPolicy(maximum_attempts=3),
        )


async def serve() -> None:
    """Run the ceiling worker until SIGTERM/SIGINT (settings from the environment, as the real worker)."""
    from xnovu.config import load_settings
    from xnovu.temporal.connection import connect_temporal
    from xnovu.temporal.options import worker_options

    settings = load_settings()
    client = await connect_temporal(settings)
    worker = Worker(
        client,
        workflows=[CeilingWorkflow],
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
