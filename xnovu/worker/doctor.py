"""`xnovu doctor`: is every dependency reachable and configured? Each failed check says how to fix it."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest
from temporalio.service import RPCError

from xnovu.config import Settings
from xnovu.db.repository import connect
from xnovu.errors import XnovuError
from xnovu.temporal.connection import connect_temporal
from xnovu.worker.composition import novu_client


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


async def _database(settings: Settings) -> list[Check]:
    try:
        repo = await asyncio.wait_for(connect(settings), 15)
    except (XnovuError, TimeoutError) as exc:
        return [
            Check("postgres", False, str(exc) or "timed out; check DATABASE_URL"),
            Check("schema", False, "skipped"),
        ]
    try:
        present = await repo.schema_present()
    finally:
        await repo.close()
    missing = [name for name, ok in present.items() if not ok]
    return [
        Check("postgres", True, "reachable"),
        Check(
            "schema", not missing, "present" if not missing else f"missing {', '.join(missing)}: run `xnovu db migrate`"
        ),
    ]


async def _temporal(settings: Settings) -> list[Check]:
    try:
        client = await connect_temporal(settings)
    except XnovuError as exc:
        return [Check("temporal", False, str(exc)), Check("namespace", False, "skipped")]
    try:
        await client.workflow_service.describe_namespace(
            DescribeNamespaceRequest(namespace=settings.temporal_namespace)
        )
    except RPCError as exc:
        return [
            Check("temporal", True, f"reachable at {settings.temporal_address}"),
            Check("namespace", False, f"{settings.temporal_namespace!r}: {exc.message}; run `xnovu bootstrap`"),
        ]
    return [
        Check("temporal", True, f"reachable at {settings.temporal_address}"),
        Check("namespace", True, settings.temporal_namespace),
    ]


async def _novu(settings: Settings) -> list[Check]:
    try:
        client = novu_client(settings)
    except XnovuError as exc:
        return [Check("novu", False, str(exc))]
    async with client:
        ok, message = await client.check_auth()
    return [Check("novu", ok, message)]


async def run_checks(settings: Settings) -> list[Check]:
    """All checks, concurrently; never raises for a failed dependency."""
    groups = await asyncio.gather(_database(settings), _temporal(settings), _novu(settings))
    return [check for group in groups for check in group]
