"""Traces end to end: a real worker exports over OTLP/HTTP to a local receiver; the spans are decoded and checked.

The tracer provider is built here and handed to the worker (never installed globally), with the real OTLP/HTTP
exporter pointed at the receiver, so what is checked is what a collector would get.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from tests.otlp import OtlpReceiver, Span, tracing_to
from tests.support import DB_PASSWORD, NOVU_SECRET, Env, eventually
from xnovu.api import NotificationClient
from xnovu.db.queries import queries
from xnovu.db.repository import connect
from xnovu.tracing import OtelTracing
from xnovu.worker.manager import WorkerManager

SECRETS = (NOVU_SECRET, DB_PASSWORD)
CLIENT = 3  # SpanKind.SPAN_KIND_CLIENT in OTLP
#: No schedule fires during the test: the manual trigger is the only way in.
QUIET_SCHEDULES = {
    "poll_interval_ms": 86_400_000,
    "failed_poll_interval_ms": 86_400_000,
    "scheduled_poll_interval_ms": 86_400_000,
}


@pytest.fixture
def tracing(receiver: OtlpReceiver, monkeypatch: pytest.MonkeyPatch) -> Iterator[OtelTracing]:
    # An operator asking for every request header (the contrib instrumentations' switch) gets none: the key is in one.
    monkeypatch.setenv("OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_CLIENT_REQUEST", ".*")
    t: OtelTracing = tracing_to(receiver)
    try:
        yield t
    finally:
        t.shutdown()


async def _worker(env: Env, tracing: OtelTracing, **overrides: Any) -> AsyncIterator[WorkerManager]:
    manager = WorkerManager(env.settings.model_copy(update=overrides), tracing=tracing)
    await manager.start()
    try:
        yield manager
    finally:
        await manager.stop()


def _one(spans: list[Span], name: str) -> Span:
    found = [s for s in spans if s.name == name]
    assert len(found) == 1, f"expected one {name!r} span, got {len(found)}: {sorted({s.name for s in spans})}"
    return found[0]


def _assert_no_secret(spans: list[Span]) -> None:
    for span in spans:
        text = json.dumps([span.name, span.attributes, span.resource], default=str)
        for secret in SECRETS:
            assert secret not in text, f"secret {secret[:6]}… in span {span.name}: {text}"


def _novu_span(receiver: OtlpReceiver, nid: int) -> Span:
    prefix = f"xnovu-{nid}-"
    spans = [
        s
        for s in receiver.snapshot()
        if s.name == "novu.trigger" and str(s.attributes.get("xnovu.novu.transaction_id", "")).startswith(prefix)
    ]
    assert spans, "no novu.trigger span yet"
    return spans[0]


async def test_a_polled_notification_is_one_trace_from_the_poll_to_the_novu_request(
    env: Env, receiver: OtlpReceiver, tracing: OtelTracing
) -> None:
    wf = await env.workflow("welcome")
    [nid] = await env.insert(wf, payload={"greeting": "payload-value-must-not-be-traced"})
    async for manager in _worker(env, tracing):
        await eventually(lambda: env.all_in([nid], "SENT"), timeout=30)
        status = await manager.status()
        assert status["tracing"] == {
            "enabled": True,
            "endpoint": receiver.url,
            "protocol": "http/protobuf",
            "service_name": "xnovu-test",
        }
    tracing.provider.force_flush()

    async def linked() -> Span:
        return _novu_span(receiver, nid)

    novu = await eventually(linked, timeout=15)
    spans = [s for s in receiver.snapshot() if s.trace_id == novu.trace_id]
    chain = [s.name for s in receiver.ancestors(novu)]
    # poll run → child workflow start → trigger activity → Novu request, all in one trace.
    assert chain == [
        "RunActivity:trigger_notification_by_id",
        "StartActivity:trigger_notification_by_id",
        "StartChildWorkflow:NotificationTriggerWorkflow",
    ], chain
    root = _one(spans, "StartChildWorkflow:NotificationTriggerWorkflow")
    assert str(root.attributes["temporalWorkflowID"]).startswith("xnovu-poll-new"), root.attributes
    child = _one(spans, "RunWorkflow:NotificationTriggerWorkflow")
    assert child.parent_id == root.span_id
    assert child.attributes["temporalWorkflowID"] == f"notification-{nid}-a1"

    # The Novu span: identifiers and counts only.
    assert novu.attributes["http.response.status_code"] == 201
    assert novu.attributes["xnovu.novu.recipients"] == 1
    assert novu.attributes["xnovu.novu.outcome"] == "acknowledged"
    # The HTTP request under it: a client span with method, URL and status, and no header at all (the Novu key
    # travels in Authorization), even when the instrumentations' header-capture variable asks for every one.
    under_novu = [s for s in spans if s.parent_id == novu.span_id]
    http = [s for s in under_novu if "http.request.method" in s.attributes]
    assert len(http) == 1, [(s.name, s.attributes) for s in under_novu]
    assert (http[0].name, http[0].kind) == ("POST", CLIENT)
    assert http[0].attributes["url.full"] == f"{env.settings.novu_api_url}/v1/events/trigger"
    assert http[0].attributes["http.response.status_code"] == 201
    assert not [k for k in http[0].attributes if "header" in k], http[0].attributes

    # The database calls of the attempt (the shared token budget's too) are children of its activity or its request:
    # client spans named for their statement in xnovu/db/queries.sql, never with a parameter.
    activity = _one(spans, "RunActivity:trigger_notification_by_id")
    db = [s for s in spans if s.attributes.get("db.system.name") == "postgresql"]
    assert any(s.parent_id == activity.span_id for s in db), [(s.name, s.parent_id) for s in db]
    assert all(s.parent_id in (activity.span_id, novu.span_id) for s in db), [(s.name, s.parent_id) for s in db]
    assert {s.kind for s in db} == {CLIENT}
    assert {"acquire", "budget_take", "record_outcomes", "finalize"} <= {s.name for s in db}, sorted(s.name for s in db)
    assert all(s.attributes["db.query.text"] == queries()[s.name] for s in db if s.name in queries())

    # The poll run that claimed it: same workflow run, its claim traced with its database call.
    claims = [
        s
        for s in receiver.snapshot()
        if s.name == "RunActivity:claim_notifications"
        and s.attributes.get("temporalRunID") == root.attributes["temporalRunID"]
    ]
    assert len(claims) == 1, [s.attributes for s in receiver.snapshot() if "claim" in s.name]
    assert any(s.parent_id == claims[0].span_id for s in receiver.snapshot() if "db.system.name" in s.attributes)

    everything = receiver.snapshot()
    _assert_no_secret(everything)
    assert not any("payload-value-must-not-be-traced" in json.dumps(s.attributes) for s in everything)
    assert {s.resource.get("service.name") for s in everything} == {"xnovu-test"}


async def test_a_manual_trigger_continues_its_trace_into_the_workflow(
    env: Env, receiver: OtlpReceiver, tracing: OtelTracing
) -> None:
    wf = await env.workflow("welcome")
    [nid] = await env.insert(wf)
    async for _manager in _worker(env, tracing, **QUIET_SCHEDULES):
        settings = env.settings.model_copy(update=QUIET_SCHEDULES)
        async with NotificationClient(settings, tracing=tracing) as nc:
            result = await nc.async_trigger_notification_by_id(nid)
        assert result.outcome.value == "sent", result
    tracing.provider.force_flush()

    async def linked() -> Span:
        return _novu_span(receiver, nid)

    novu = await eventually(linked, timeout=15)
    chain = [s.name for s in receiver.ancestors(novu)]
    assert chain == [
        "RunActivity:trigger_notification_by_id",
        "StartActivity:trigger_notification_by_id",
        "StartWorkflow:NotificationTriggerWorkflow",
        "xnovu.start_notification",
    ], chain
    root = next(s for s in receiver.snapshot() if s.name == "xnovu.start_notification")
    assert root.attributes == {"xnovu.notification_id": nid}
    assert root.parent_id == ""
    _assert_no_secret(receiver.snapshot())


async def test_a_statement_is_a_client_span_named_for_its_query_and_never_carries_a_parameter(env: Env) -> None:
    provider = TracerProvider()
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    repo = await connect(env.settings, tracing=OtelTracing(provider))
    try:
        await repo.ping()
        with pytest.raises(asyncpg.DataError):
            await repo.pool.fetchval("-- a comment first\nSELECT $1::int", "parameter-must-not-be-traced")
    finally:
        await repo.close()
    ping, failed = [s for s in exporter.get_finished_spans() if s.kind is SpanKind.CLIENT]
    database = urlsplit(env.settings.database_url.get_secret_value()).path.lstrip("/")  # type: ignore[union-attr]
    assert ping.name == "ping"
    assert dict(ping.attributes or {}) == {
        "db.system.name": "postgresql",
        "db.namespace": database,
        "db.query.summary": "ping",
        "db.query.text": queries()["ping"],
    }
    assert failed.name == "SELECT" and failed.status.status_code is StatusCode.ERROR
    assert failed.attributes and failed.attributes["error.type"] == "DataError"
    assert "parameter-must-not-be-traced" not in repr((failed.attributes, failed.events, failed.status))
