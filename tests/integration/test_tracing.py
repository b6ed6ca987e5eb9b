"""Traces end to end: a real worker exports over OTLP/HTTP to a local receiver; the spans are decoded and checked.

The tracer provider is built here and handed to the worker (never installed globally), with the real OTLP/HTTP
exporter pointed at the receiver, so what is checked is what a collector would get.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from tests.otlp import OtlpReceiver, Span, tracing_to
from tests.support import DB_PASSWORD, NOVU_SECRET, Env, eventually
from xnovu.api import NotificationClient
from xnovu.tracing import OtelTracing
from xnovu.worker.manager import WorkerManager

SECRETS = (NOVU_SECRET, DB_PASSWORD)
#: No schedule fires during the test: the manual trigger is the only way in.
QUIET_SCHEDULES = {
    "poll_interval_ms": 86_400_000,
    "failed_poll_interval_ms": 86_400_000,
    "scheduled_poll_interval_ms": 86_400_000,
}


@pytest.fixture
def tracing(receiver: OtlpReceiver, monkeypatch: pytest.MonkeyPatch) -> Iterator[OtelTracing]:
    # An operator asking for every request header must still not get the Novu key (it is redacted).
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
    under_novu = [s for s in spans if s.parent_id == novu.span_id]
    http = [s for s in under_novu if s.scope.startswith("opentelemetry.instrumentation.httpx")]
    assert len(http) == 1, [(s.name, s.scope) for s in spans if s.parent_id == novu.span_id]
    http_attrs = http[0].attributes
    assert 201 in (http_attrs.get("http.status_code"), http_attrs.get("http.response.status_code")), http_attrs
    auth = [v for k, v in http_attrs.items() if k.startswith("http.request.header.") and "authorization" in k]
    assert auth == [["[REDACTED]"]], http_attrs

    # The database calls of the attempt are children of its activity (the shared token budget's, of the request).
    activity = _one(spans, "RunActivity:trigger_notification_by_id")
    db = [s for s in spans if s.scope.startswith("opentelemetry.instrumentation.asyncpg")]
    assert any(s.parent_id == activity.span_id for s in db), [(s.name, s.parent_id) for s in db]
    assert all(s.parent_id in (activity.span_id, novu.span_id) for s in db), [(s.name, s.parent_id) for s in db]
    assert all(s.attributes.get("db.system") == "postgresql" or s.attributes.get("db.system.name") for s in db)

    # The poll run that claimed it: same workflow run, its claim traced with its database call.
    claims = [
        s
        for s in receiver.snapshot()
        if s.name == "RunActivity:claim_notifications"
        and s.attributes.get("temporalRunID") == root.attributes["temporalRunID"]
    ]
    assert len(claims) == 1, [s.attributes for s in receiver.snapshot() if "claim" in s.name]
    assert any(s.parent_id == claims[0].span_id for s in receiver.snapshot() if "asyncpg" in s.scope)

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
