"""`xnovu trigger` and `xnovu worker health` with traces on: the command line's trace continues in the worker."""

from __future__ import annotations

from tests.e2e.conftest import Cli
from tests.otlp import OtlpReceiver, Span, tracing_to
from tests.support import Env, eventually
from xnovu.worker.manager import WorkerManager

DAY_MS = 86_400_000


async def test_cli_trigger_exports_a_trace_that_the_worker_continues(
    env: Env, cli: Cli, receiver: OtlpReceiver
) -> None:
    wf = await env.workflow("welcome")
    # Only the CLI may send this row: no tick and no wake-up races it.
    quiet = {
        "poll_interval_ms": DAY_MS,
        "failed_poll_interval_ms": DAY_MS,
        "scheduled_poll_interval_ms": DAY_MS,
        "wakeup_enabled": False,
    }
    tracing = tracing_to(receiver, "xnovu-worker-test")
    manager = WorkerManager(env.settings.model_copy(update=quiet), tracing=tracing)
    await manager.start()
    try:
        assert manager.health_port
        otel = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url, "OTEL_SERVICE_NAME": "xnovu-cli-test"}
        health = await cli.json("worker", "health", env={"WORKER_HEALTH_PORT": manager.health_port})
        assert health["status"]["tracing"]["enabled"] is True
        assert health["status"]["tracing"]["endpoint"] == receiver.url
        [nid] = await env.insert(wf)
        out = await cli.json("trigger", nid, "--wait", env=otel, timeout=60)
        assert out["results"][0]["outcome"] == "sent", out
    finally:
        await manager.stop()
        tracing.shutdown()

    async def linked_novu_span() -> Span | None:
        spans = receiver.snapshot()
        # `trigger --wait` starts the workflow, then joins it for the result: the first start's trace has the send.
        starts = {s.trace_id for s in spans if s.name == "xnovu.start_notification"}
        return next((s for s in spans if s.name == "novu.trigger" and s.trace_id in starts), None)

    novu = await eventually(linked_novu_span, timeout=15)
    spans = receiver.snapshot()
    [start] = [s for s in spans if s.name == "xnovu.start_notification" and s.trace_id == novu.trace_id]
    assert start.resource["service.name"] == "xnovu-cli-test"  # exported by the CLI process (flushed before exit)
    assert novu.resource["service.name"] == "xnovu-worker-test"
    assert [s.name for s in receiver.ancestors(novu)][-2:] == [
        "StartWorkflow:NotificationTriggerWorkflow",
        "xnovu.start_notification",
    ]
