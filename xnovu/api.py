"""The Python API (README "Python API"): trigger notifications through Temporal and inspect their workflows.

async with NotificationClient(load_settings()) as nc:
    result = await nc.async_trigger_notification_by_id(42)
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from types import TracebackType
from typing import Any

from temporalio.client import Client, WorkflowHandle
from temporalio.exceptions import WorkflowAlreadyStartedError

from xnovu.config import Settings, load_settings
from xnovu.core.models import MultipleTriggerRequest, NotificationInput, Outcome, TriggerResult, child_id
from xnovu.core.status import NotificationStatus
from xnovu.db.repository import Repository, connect
from xnovu.errors import NotificationNotFoundError

# Re-exported: the stable path of the trigger core for code that runs it without Temporal (README "Python API"). It
# was xnovu.core.processor until issue 18 moved it above the database and Novu, out of the pure xnovu/core.
from xnovu.service.processor import NotificationProcessor as NotificationProcessor
from xnovu.temporal import searchattrs
from xnovu.temporal.connection import connect_temporal
from xnovu.temporal.workflows import (
    MAX_BATCH_IDS,
    NotificationTriggerWorkflow,
    TriggerMultipleNotificationsWorkflow,
)
from xnovu.tracing import Tracing


class NotificationClient:
    """Starts notification workflows with the same deterministic ids the polls use, so a manual trigger racing
    a poll joins the same workflow instead of sending twice (I4).

    With `tracing` on, the client carries Temporal's tracing interceptor, so a manual trigger's trace continues into
    the notification's workflow, its activity and its Novu requests (README "Observability").
    """

    def __init__(
        self,
        settings: Settings,
        *,
        client: Client | None = None,
        repo: Repository | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        self.settings = settings
        self.tracing = tracing or Tracing.off()
        self._client = client
        self._repo = repo
        self._owns_repo = repo is None

    async def client(self) -> Client:
        if self._client is None:
            self._client = await connect_temporal(self.settings, interceptors=self.tracing.temporal_interceptors())
        return self._client

    async def repo(self) -> Repository:
        if self._repo is None:
            self._repo = await connect(self.settings)
        return self._repo

    async def close(self) -> None:
        if self._repo is not None and self._owns_repo:
            await self._repo.close()
            self._repo = None

    async def __aenter__(self) -> NotificationClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def start_notification(self, notification_id: int) -> WorkflowHandle[Any, TriggerResult]:
        """Start (or join) the workflow of the row's next attempt; returns its handle."""
        with self.tracing.span("xnovu.start_notification", {"xnovu.notification_id": notification_id}):
            return await self._start_notification(notification_id)

    async def _start_notification(self, notification_id: int) -> WorkflowHandle[Any, TriggerResult]:
        row = await (await self.repo()).load(notification_id)
        if row is None:
            raise NotificationNotFoundError(f"notification {notification_id} does not exist")
        client = await self.client()
        # A row a poll already claimed (or that is already sent) is joined, not started again.
        joined = row.status in (NotificationStatus.PROCESSING, NotificationStatus.SENT)
        attempt = row.attempts if joined else row.attempts + 1
        wid = child_id(notification_id, attempt)
        if joined:
            return client.get_workflow_handle_for(NotificationTriggerWorkflow.run, wid)
        try:
            return await client.start_workflow(
                NotificationTriggerWorkflow.run,
                NotificationInput(notification_id, attempt),
                id=wid,
                task_queue=self.settings.temporal_task_queue,
                search_attributes=searchattrs.for_notification(
                    notification_id, row.workflow_key, row.enterprise_id, row.priority
                ),
                memo=searchattrs.memo_for_notification(row.name),
                priority=searchattrs.temporal_priority(row.priority, row.enterprise_id),
            )
        except WorkflowAlreadyStartedError:
            return client.get_workflow_handle_for(NotificationTriggerWorkflow.run, wid)

    async def async_trigger_notification_by_id(self, notification_id: int) -> TriggerResult:
        """Trigger one notification and wait for the attempt's result."""
        return (await self.trigger_and_wait(notification_id))[1]

    async def trigger_and_wait(self, notification_id: int) -> tuple[str, TriggerResult]:
        """Start (or join) the row's attempt once and wait for it: (workflow id, result). A row already sent is
        reported as skipped, under the workflow id of the attempt that sent it."""
        row = await (await self.repo()).load(notification_id)
        if row is not None and row.status == NotificationStatus.SENT:
            return child_id(notification_id, row.attempts), TriggerResult(
                notification_id,
                Outcome.SKIPPED,
                NotificationStatus.SENT,
                reason=f"notification {notification_id} was already sent",
                attempt=row.attempts,
            )
        handle = await self.start_notification(notification_id)
        return handle.id, await self.result_of(notification_id, handle)

    @staticmethod
    async def result_of(notification_id: int, handle: WorkflowHandle[Any, TriggerResult]) -> TriggerResult:
        """The result of an attempt already started (or joined) with `start_notification`; starts nothing."""
        try:
            return await handle.result()
        except Exception as exc:  # the joined workflow may be gone (e.g. terminated); say so, don't crash
            return TriggerResult(
                notification_id, Outcome.SKIPPED, reason=f"workflow {handle.id} did not complete: {type(exc).__name__}"
            )

    async def async_trigger_multiple_notifications(
        self, notification_ids: Sequence[int], *, concurrency: int | None = None
    ) -> list[TriggerResult]:
        """Trigger many notifications in one TriggerMultipleNotificationsWorkflow (bounded concurrency).

        The workflow starts each row's attempt as its own workflow; a row whose attempt was already running (a poll
        claimed it first) comes back SKIPPED and PROCESSING, and is joined here: its result is that workflow's.
        """
        client = await self.client()
        ids = list(notification_ids)
        results: list[TriggerResult] = []
        for i in range(0, len(ids), MAX_BATCH_IDS):  # one workflow per MAX_BATCH_IDS ids: bounded histories
            results += await client.execute_workflow(
                TriggerMultipleNotificationsWorkflow.run,
                MultipleTriggerRequest(ids[i : i + MAX_BATCH_IDS], concurrency),
                id=f"trigger-multiple-{uuid.uuid4()}",
                task_queue=self.settings.temporal_task_queue,
            )

        async def joined(r: TriggerResult) -> TriggerResult:
            if not (r.outcome is Outcome.SKIPPED and r.notification_status == NotificationStatus.PROCESSING):
                return r
            if r.attempt is None:
                return r
            wid = child_id(r.notification_id, r.attempt)
            return await self.result_of(
                r.notification_id, client.get_workflow_handle_for(NotificationTriggerWorkflow.run, wid)
            )

        return list(await asyncio.gather(*(joined(r) for r in results)))

    async def get_workflow_status(self, workflow_id: str) -> dict[str, Any]:
        d = await (await self.client()).get_workflow_handle(workflow_id).describe()
        return {
            "workflow_id": d.id,
            "run_id": d.run_id,
            "type": d.workflow_type,
            "status": d.status.name if d.status else None,
            "task_queue": d.task_queue,
            "start_time": d.start_time.isoformat() if d.start_time else None,
            "close_time": d.close_time.isoformat() if d.close_time else None,
            "history_length": d.history_length,
        }

    async def get_workflow_result(self, workflow_id: str) -> Any:
        return await (await self.client()).get_workflow_handle(workflow_id).result()


async def _trigger(ids: Sequence[int], settings: Settings | None) -> list[TriggerResult]:
    async with NotificationClient(settings or load_settings()) as nc:
        if len(ids) == 1:
            return [await nc.async_trigger_notification_by_id(ids[0])]
        return await nc.async_trigger_multiple_notifications(ids)


def trigger_notification_by_id(notification_id: int, settings: Settings | None = None) -> TriggerResult:
    """Blocking one-call trigger of one notification through Temporal."""
    return asyncio.run(_trigger([notification_id], settings))[0]


def trigger_notifications_by_ids(
    notification_ids: Sequence[int], settings: Settings | None = None
) -> list[TriggerResult]:
    """Blocking one-call trigger of many notifications through Temporal."""
    return asyncio.run(_trigger(list(notification_ids), settings))
