"""Bootstrap: namespace, search attributes and schedules, idempotently (`xnovu bootstrap` and worker start-up)."""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass, field

from google.protobuf.duration_pb2 import Duration
from temporalio.api.enums.v1 import IndexedValueType, TaskQueueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest, ListSearchAttributesRequest
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import (
    DescribeNamespaceRequest,
    DescribeTaskQueueRequest,
    RegisterNamespaceRequest,
    UpdateTaskQueueConfigRequest,
)
from temporalio.client import Client
from temporalio.common import SearchAttributeIndexedValueType
from temporalio.service import RPCError, RPCStatusCode

from xnovu.config import Settings
from xnovu.errors import TemporalUnavailableError
from xnovu.temporal import searchattrs
from xnovu.temporal.schedules import RULES_SYNC_ID, ensure_schedules, run_rules_sync_at_start
from xnovu.temporal.stranded import heal_stranded

log = logging.getLogger(__name__)

#: How long bootstrap waits out "namespace not found" after creating a namespace (server caches refresh in ~10 s).
NEW_NAMESPACE_WAIT_S = 30.0
#: The first and the longest pause between two checks whether a new namespace answers: a namespace on the dev server
#: answers within about a second, so a fixed half second cost most workers' first start a full second.
NAMESPACE_POLL_S = (0.05, 0.5)

_INDEXED = {
    SearchAttributeIndexedValueType.INT: IndexedValueType.INDEXED_VALUE_TYPE_INT,
    SearchAttributeIndexedValueType.KEYWORD: IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD,
}


@dataclass
class BootstrapReport:
    """What bootstrap found and did."""

    namespace: str = "unchanged"
    search_attributes: list[str] = field(default_factory=list)
    schedules: dict[str, str] = field(default_factory=dict)
    fairness_weights: dict[str, float] | str = field(default_factory=dict)
    """FAIR_SHARE_WEIGHTS as set on the task queue, or why not."""
    stranded_runs: list[str] = field(default_factory=list)
    """Schedule runs terminated because they were stranded on a queue no worker polls (xnovu/temporal/stranded.py)."""


async def _namespace_exists(client: Client, namespace: str) -> bool:
    try:
        await client.workflow_service.describe_namespace(DescribeNamespaceRequest(namespace=namespace))
    except RPCError as exc:
        if exc.status != RPCStatusCode.NOT_FOUND:
            raise
        return False
    return True


async def ensure_namespace(client: Client, settings: Settings, *, wait_s: float = 30.0) -> str:
    """Register the namespace if missing (ALREADY_EXISTS is success), then wait until it answers."""
    ns = settings.temporal_namespace
    if await _namespace_exists(client, ns):
        return "unchanged"
    result = "created"
    try:
        retention = Duration(seconds=settings.temporal_namespace_retention_days * 86_400)
        await client.workflow_service.register_namespace(
            RegisterNamespaceRequest(namespace=ns, workflow_execution_retention_period=retention)
        )
    except RPCError as exc:
        if exc.status != RPCStatusCode.ALREADY_EXISTS:
            raise
        result = "unchanged"  # another worker created it a moment ago
    # A new namespace takes a moment to reach every service ("namespace not found" meanwhile).
    deadline = asyncio.get_running_loop().time() + wait_s
    pause = NAMESPACE_POLL_S[0]
    while not await _namespace_exists(client, ns):
        if asyncio.get_running_loop().time() > deadline:
            raise TemporalUnavailableError(f"namespace {ns!r} is registered but not found after {wait_s:.0f} s")
        await asyncio.sleep(pause)
        pause = min(NAMESPACE_POLL_S[1], pause * 2)
    return result


async def ensure_search_attributes(client: Client, settings: Settings) -> list[str]:
    """Register XnovuNotificationId / XnovuWorkflowKey / XnovuEnterpriseId / XnovuRuleId / XnovuPriority if missing."""
    ns = settings.temporal_namespace
    existing = await client.operator_service.list_search_attributes(ListSearchAttributesRequest(namespace=ns))
    known = set(existing.custom_attributes) | set(existing.system_attributes)
    missing = {k.name: _INDEXED[k.indexed_value_type] for k in searchattrs.ALL_KEYS if k.name not in known}
    if missing:
        try:
            await client.operator_service.add_search_attributes(
                AddSearchAttributesRequest(namespace=ns, search_attributes=missing)
            )
        except RPCError as exc:
            if exc.status != RPCStatusCode.ALREADY_EXISTS:
                raise
    return sorted(missing)


#: Weight overrides a task queue holds at most (the server's matching.maxFairnessKeyWeightOverrides default).
MAX_WEIGHT_OVERRIDES = 1000


def _ours(key: str) -> bool:
    """A fairness key xnovu sets: an enterprise id, or the key of rows without one."""
    if key == searchattrs.NO_ENTERPRISE_KEY:
        return True
    try:
        return str(uuid.UUID(key)) == key
    except ValueError:
        return False


async def ensure_fairness_weights(client: Client, settings: Settings) -> dict[str, float] | str:
    """FAIR_SHARE_WEIGHTS as the task queue's fairness weight overrides, so that where the server has fairness on
    it shares out the children (fairness key = enterprise) by the same weights as the claims and the token budget
    (docs/priority.md "Temporal priority and fairness keys"). Keys of xnovu's no longer configured are unset; other
    keys are left alone. Returns the overrides set, or why nothing was done (a server without the API, a key
    without the permission: bootstrap goes on, only the weights are missing)."""
    wanted = dict(sorted(settings.fair_share_weight_map.items())[:MAX_WEIGHT_OVERRIDES])
    ns, queue = settings.temporal_namespace, settings.temporal_task_queue
    kind = TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW
    try:
        desc = await client.workflow_service.describe_task_queue(
            DescribeTaskQueueRequest(
                namespace=ns, task_queue=TaskQueue(name=queue), task_queue_type=kind, report_config=True
            )
        )
        current = dict(desc.config.fairness_weight_overrides)
        stale = [k for k in current if _ours(k) and k not in wanted]
        changed = {k: w for k, w in wanted.items() if abs(current.get(k, -1.0) - w) > 1e-6}
        if stale or changed:
            await client.workflow_service.update_task_queue_config(
                UpdateTaskQueueConfigRequest(
                    namespace=ns,
                    identity="xnovu bootstrap",
                    task_queue=queue,
                    task_queue_type=kind,
                    set_fairness_weight_overrides=changed,
                    unset_fairness_weight_overrides=stale,
                )
            )
    except RPCError as exc:
        if exc.status not in (
            RPCStatusCode.UNIMPLEMENTED,
            RPCStatusCode.PERMISSION_DENIED,
            RPCStatusCode.INVALID_ARGUMENT,
            RPCStatusCode.FAILED_PRECONDITION,
        ):
            raise
        log.warning("fairness weights not set on the task queue", extra={"reason": exc.message})
        return f"not set: {exc.message}"
    return wanted


async def _heal(client: Client, schedules: dict[str, str]) -> list[str]:
    """The stranded runs terminated, described. A schedule this bootstrap just created has no run to strand, so only
    the others are read (a new schedule's describe waits for its first step: half a second of every first start).
    Best effort: a key that may not terminate workflows, or a server without an API the check reads, must not keep
    a worker from starting (`xnovu schedules heal` says why)."""
    existing = [sid for sid, outcome in schedules.items() if outcome != "created"]
    if not existing:
        return []
    try:
        return [r.describe() for r in (await heal_stranded(client, existing)).terminated]
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            raise  # a namespace still reaching every service: the caller's loop waits it out
        log.warning("stranded schedule runs not checked", extra={"reason": exc.message})
        return []


async def bootstrap(client: Client, settings: Settings, *, serves_poll_queue: bool = False) -> BootstrapReport:
    """Namespace, search attributes, schedules: safe to run any number of times, from any number of workers. Runs of
    the schedules stranded on a queue no worker polls are terminated (xnovu/temporal/stranded.py), so a later
    rollback to this release heals itself.

    `serves_poll_queue`: the caller is a worker about to serve the polls' own task queue, so poll schedules of an
    earlier release may move there (xnovu/temporal/schedules.py `ensure_schedules`)."""
    report = BootstrapReport()
    try:
        report.namespace = await ensure_namespace(client, settings)
        # Just after registration some services still answer "namespace not found" until their cache refreshes.
        deadline = asyncio.get_running_loop().time() + NEW_NAMESPACE_WAIT_S
        pause = NAMESPACE_POLL_S[0]
        while True:
            try:
                report.search_attributes = await ensure_search_attributes(client, settings)
                report.fairness_weights = await ensure_fairness_weights(client, settings)
                report.schedules = await ensure_schedules(client, settings, serves_poll_queue=serves_poll_queue)
                # After the schedules: a run is stranded only against the queue its schedule targets now.
                report.stranded_runs = await _heal(client, report.schedules)
                # Rule Schedules are in step from the start, not a sync interval later (README "Rules").
                await run_rules_sync_at_start(
                    client, just_created=report.schedules.get(RULES_SYNC_ID) == "created"
                )
                break
            except RPCError as exc:
                if exc.status != RPCStatusCode.NOT_FOUND or asyncio.get_running_loop().time() > deadline:
                    raise
                await asyncio.sleep(pause)
                pause = min(NAMESPACE_POLL_S[1], pause * 2)
    except RPCError as exc:
        raise TemporalUnavailableError(
            f"bootstrap failed against {settings.temporal_address} namespace {settings.temporal_namespace!r}: "
            f"{exc.message}; check that the API key/certificate may manage namespaces and schedules"
        ) from None
    log.info(
        "bootstrap done",
        extra={
            "namespace": report.namespace,
            "search_attributes": report.search_attributes,
            "schedules": report.schedules,
            "fairness_weights": report.fairness_weights,
            "stranded_runs_terminated": len(report.stranded_runs),
        },
    )
    return report
