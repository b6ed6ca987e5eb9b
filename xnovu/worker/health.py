"""Health server: /health for probes, /status for operators, /metrics for Prometheus (README "Operations").

It only serves: what is healthy, what the status is and when the database gauges are sampled is decided by the
object that owns the running state (`WorkerManager.health()`, `.status()`, `.sample_gauges()`), handed in as a
`HealthSource`. Starlette app served by uvicorn inside the worker's event loop; signals stay with the worker (it
decides how to shut down), so uvicorn's own signal capture is switched off.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Generator
from typing import Any, Protocol

import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from xnovu.metrics import METRICS

log = logging.getLogger(__name__)


class HealthSource(Protocol):
    """What the health server asks; `WorkerManager` is the one implementation."""

    async def health(self) -> tuple[bool, str]: ...

    async def status(self) -> dict[str, Any]: ...

    async def sample_gauges(self) -> None: ...


class _QuietServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def create_app(source: HealthSource) -> Starlette:
    """The three routes over `source`."""

    async def health(_: Request) -> Response:
        ok, reason = await source.health()
        return JSONResponse({"status": "ok"} if ok else {"status": "unhealthy", "reason": reason}, 200 if ok else 503)

    async def status(_: Request) -> Response:
        return JSONResponse(await source.status())

    async def metrics(_: Request) -> Response:
        await source.sample_gauges()
        return Response(generate_latest(METRICS.registry), media_type=CONTENT_TYPE_LATEST)

    return Starlette(
        routes=[Route("/health", health), Route("/status", status), Route("/metrics", metrics)],
    )


class HealthServer:
    """Runs the health app on `host:port` (WORKER_HEALTH_HOST / WORKER_HEALTH_PORT) in the current event loop."""

    def __init__(self, source: HealthSource, host: str, port: int) -> None:
        config = uvicorn.Config(
            create_app(source),
            host=host,
            port=port,
            log_level="warning",
            access_log=False,
            lifespan="off",
        )
        self.server = _QuietServer(config)
        self._task: asyncio.Task[None] | None = None

    @property
    def port(self) -> int:
        """The bound port (useful when configured as 0)."""
        for server in self.server.servers:
            for sock in server.sockets:
                return int(sock.getsockname()[1])
        return 0

    async def start(self) -> None:
        self._task = asyncio.create_task(self.server.serve(), name="health-server")
        while not self.server.started:
            if self._task.done():
                self._task.result()  # surfaces a bind error ("address already in use")
                return
            await asyncio.sleep(0.02)
        log.info("health server listening", extra={"port": self.port})

    async def stop(self) -> None:
        self.server.should_exit = True
        if self._task is not None:
            with contextlib.suppress(Exception):
                await self._task
