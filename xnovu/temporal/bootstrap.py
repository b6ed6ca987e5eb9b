"""Bootstrap: namespace, search attributes and schedules, idempotently (`xnovu bootstrap` and worker start-up)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from google.protobuf.duration_pb2 import Duration
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest, ListSearchAttributesRequest
from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest, RegisterNamespaceRequest
from temporalio.client import Client
from temporalio.common import SearchAttributeIndexedValueType
from temporalio.service import RPCError, RPCStatusCode

from xnovu.config import Settings
from xnovu.errors import TemporalUnavailableError
from xnovu.temporal import searchattrs
from xnovu.temporal.schedules import ensure_schedules

log = logging.getLogger(__name__)

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


async def ensure_namespace(client: Client, settings: Settings, *, wait_s: float = 30.0) -> str:
    """Register the namespace if missing (ALREADY_EXISTS is success), then wait until it answers."""
    ns = settings.temporal_namespace
    result = "unchanged"
    try:
        await client.workflow_service.describe_namespace(DescribeNamespaceRequest(namespace=ns))
        return result
    except RPCError as exc:
        if exc.status != RPCStatusCode.NOT_FOUND:
            raise
    try:
        retention = Duration(seconds=settings.temporal_namespace_retention_days * 86_400)
        await client.workflow_service.register_namespace(
            RegisterNamespaceRequest(namespace=ns, workflow_execution_retention_period=retention)
        )
        result = "created"
    except RPCError as exc:
        if exc.status != RPCStatusCode.ALREADY_EXISTS:
            raise
    # A new namespace takes a moment to reach every service ("namespace not found" meanwhile).
    deadline = asyncio.get_running_loop().time() + wait_s
    while True:
        try:
            await client.workflow_service.describe_namespace(DescribeNamespaceRequest(namespace=ns))
            return result
        except RPCError as exc:
            if exc.status != RPCStatusCode.NOT_FOUND or asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.5)


async def ensure_search_attributes(client: Client, settings: Settings) -> list[str]:
    """Register XnovuNotificationId / XnovuWorkflowKey / XnovuEnterpriseId if missing; returns those added."""
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


async def bootstrap(client: Client, settings: Settings) -> BootstrapReport:
    """Namespace, search attributes, schedules: safe to run any number of times, from any number of workers."""
    report = BootstrapReport()
    try:
        report.namespace = await ensure_namespace(client, settings)
        report.search_attributes = await ensure_search_attributes(client, settings)
        report.schedules = await ensure_schedules(client, settings)
    except RPCError as exc:
        raise TemporalUnavailableError(
            f"bootstrap failed against {settings.temporal_address} namespace {settings.temporal_namespace!r}: "
            f"{exc.message}; check that the API key/certificate may manage namespaces and schedules"
        ) from None
    log.info(
        "bootstrap done",
        extra={"namespace": report.namespace, "search_attributes": report.search_attributes, "schedules": report.schedules},
    )
    return report
