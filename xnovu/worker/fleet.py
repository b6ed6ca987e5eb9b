"""This worker's place in the fleet (xnovu/db/fleet.py): its row is written when it starts, refreshed every
HEARTBEAT_EVERY_S while its Temporal worker runs, and deleted when it stops.

A loop of its own rather than a step of the claim (where the hold sweep runs): only the worker that runs a poll
claims, and every worker serving the queue must count, those that never run a poll first. Independent of the
wake-up listener, so a worker with WAKEUP_ENABLED=false counts as well.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from collections.abc import Callable

import asyncpg

from xnovu.db import fleet
from xnovu.db.fleet import FleetMember

log = logging.getLogger(__name__)

#: A heartbeat or the leave never holds the loop or the stop longer than this.
STATEMENT_TIMEOUT_S = 2.0


def member_id() -> str:
    """Host (the pod's name on Kubernetes), process and a random part: unique across restarts of one pod."""
    return f"{socket.gethostname()[:100]}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


class FleetPresence:
    """Writes, refreshes and deletes this worker's row; `running` says whether its Temporal worker still serves the
    queue (a worker whose Temporal worker ended stops refreshing, so its slots age out)."""

    def __init__(self, pool: asyncpg.Pool, member: FleetMember, running: Callable[[], bool]) -> None:
        self.pool = pool
        self.member = member
        self._running = running
        self._task: asyncio.Task[None] | None = None
        self._failing = False

    async def start(self) -> None:
        """The first heartbeat (awaited: the worker counts from its start on), then the loop."""
        await self._beat()
        self._task = asyncio.create_task(self._loop(), name="fleet-heartbeat")

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(fleet.HEARTBEAT_EVERY_S)
            if self._running():
                await self._beat()

    async def _beat(self) -> None:
        """One heartbeat; a failure is logged once (and the recovery), the row ages out meanwhile."""
        try:
            pruned = await fleet.beat(self.pool, self.member, timeout_s=STATEMENT_TIMEOUT_S)
        except (TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
            if not self._failing:
                log.warning(
                    "fleet heartbeat failed: this worker's slots stop counting in the claims' window until it succeeds",
                    extra={"error": type(exc).__name__},
                )
            self._failing = True
            return
        if self._failing:
            log.info("fleet heartbeat succeeds again")
        self._failing = False
        if pruned:
            log.info("forgot workers not seen for long", extra={"count": pruned})

    async def stop(self) -> None:
        """Stop the loop and delete the row: the other workers' claims stop counting these slots at once."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        try:
            await fleet.leave(self.pool, self.member.id, timeout_s=STATEMENT_TIMEOUT_S)
        except (TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
            log.warning("could not leave the fleet: the row ages out", extra={"error": type(exc).__name__})
