"""The tracing switch: off unless an OTLP endpoint is set, no OpenTelemetry import when off, readable errors."""

from __future__ import annotations

import builtins
import os
import subprocess
import sys
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from xnovu.errors import ConfigError
from xnovu.novu.client import DOCTOR_PROBE_PATH, NovuClient
from xnovu.tracing import (
    INSTALL_HINT,
    ExporterState,
    OtelTracing,
    Tracing,
    exporter_settings,
    redact_endpoint,
    tracing_from_environ,
)


def test_tracing_is_off_without_an_endpoint_and_its_hooks_do_nothing() -> None:
    tracing = tracing_from_environ({"OTEL_SERVICE_NAME": "x"})
    assert type(tracing) is Tracing and not tracing.enabled
    assert tracing.state.as_dict() == {"enabled": False}
    assert tracing.temporal_interceptors() == ()
    with tracing.span("anything", {"a": 1}) as span:
        span.set_attribute("b", 2)
    tracing.shutdown()


@pytest.mark.parametrize(
    "environ",
    [
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_SDK_DISABLED": "true"},
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_TRACES_EXPORTER": "none"},
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "   "},
    ],
)
def test_standard_switches_turn_tracing_off(environ: dict[str, str]) -> None:
    assert not exporter_settings(environ).enabled


def test_a_worker_without_tracing_never_imports_opentelemetry() -> None:
    code = (
        "import sys\n"
        "import xnovu.worker.manager, xnovu.worker.health, xnovu.api, xnovu.cli\n"
        "from xnovu.tracing import tracing_from_environ\n"
        "from xnovu.worker.manager import WorkerManager\n"
        "from xnovu.config import Settings\n"
        "t = tracing_from_environ({})\n"
        "WorkerManager(Settings(_env_file=None), tracing=t)\n"
        "loaded = sorted(m for m in sys.modules if m.startswith(('opentelemetry', 'temporalio.contrib')))\n"
        "assert not loaded, loaded\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 0, result.stderr


def test_endpoint_and_protocol_come_from_the_standard_variables() -> None:
    state = exporter_settings({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"})
    assert state == ExporterState(True, "http://collector:4318", "http/protobuf", "xnovu")
    state = exporter_settings(
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "https://traces.example:4317",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "GRPC",
            "OTEL_SERVICE_NAME": "notify-worker",
        }
    )
    assert state == ExporterState(True, "https://traces.example:4317", "grpc", "notify-worker")


def test_the_endpoint_is_shown_without_credentials() -> None:
    url = "https://user:s3cret@collector.example:4318/otlp/?token=abc#frag"
    assert redact_endpoint(url) == "https://collector.example:4318/otlp/"
    state = exporter_settings({"OTEL_EXPORTER_OTLP_ENDPOINT": url, "OTEL_EXPORTER_OTLP_HEADERS": "api-key=xyz"})
    assert "s3cret" not in str(state.as_dict()) and "abc" not in str(state.as_dict())
    assert "xyz" not in str(state.as_dict())


@pytest.mark.parametrize(
    ("environ", "variable"),
    [
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}, "PROTOCOL"),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4317"}, "OTEL_EXPORTER_OTLP_ENDPOINT"),
    ],
)
def test_a_bad_value_is_one_line_naming_the_variable(environ: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigError) as info:
        tracing_from_environ(environ)
    message = str(info.value)
    assert variable in message and "\n" not in message


def test_a_missing_extra_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def no_sdk(name: str, *args: Any, **kwargs: Any) -> Any:
        if name.startswith("opentelemetry.sdk"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_sdk)
    with pytest.raises(ConfigError) as info:
        tracing_from_environ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"})
    assert INSTALL_HINT in str(info.value) and "OTEL_EXPORTER_OTLP_ENDPOINT" in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
def test_an_endpoint_builds_an_otlp_exporter_for_the_protocol(protocol: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", protocol)
    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    tracing = tracing_from_environ()
    try:
        assert isinstance(tracing, OtelTracing) and tracing.enabled
        assert tracing.state.protocol == protocol
        resource = tracing.provider.resource.attributes
        assert resource["service.name"] == "xnovu"
        processor = tracing.provider._active_span_processor._span_processors[0]
        # (private: newer SDKs keep it in `_batch_processor`, the lower bound of pyproject.toml on the processor)
        inner = getattr(processor, "_batch_processor", processor)
        exporter = getattr(inner, "_exporter", None) or processor.span_exporter  # type: ignore[attr-defined]
        assert ("grpc" in type(exporter).__module__) == (protocol == "grpc")
    finally:
        tracing.provider.shutdown = lambda: None  # type: ignore[method-assign]  # nothing listens on port 9
        tracing.shutdown()


def _in_memory() -> tuple[OtelTracing, InMemorySpanExporter]:
    provider = TracerProvider()
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return OtelTracing(provider), exporter


async def test_a_novu_request_is_a_client_span_whose_context_goes_out_as_traceparent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Asking for every header (the contrib instrumentations' switch) records none: the key is in Authorization.
    monkeypatch.setenv("OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_CLIENT_REQUEST", ".*")
    sent: list[httpx.Request] = []

    def novu(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(200, json={"data": {}})

    tracing, exporter = _in_memory()
    url = "https://user:pw@novu.example/api"
    async with NovuClient(url, "sk-secret-key", transport=httpx.MockTransport(novu), tracing=tracing) as client:
        ok, _ = await client.check_auth()
    assert ok
    [span] = exporter.get_finished_spans()
    assert (span.name, span.kind) == ("DELETE", SpanKind.CLIENT)
    assert dict(span.attributes or {}) == {
        "http.request.method": "DELETE",
        "url.full": f"https://novu.example/api{DOCTOR_PROBE_PATH}",
        "server.address": "novu.example",
        "server.port": 443,
        "http.response.status_code": 200,
    }
    context = span.get_span_context()
    assert sent[0].headers["traceparent"].startswith(f"00-{context.trace_id:032x}-{context.span_id:016x}-")


@pytest.mark.parametrize(
    ("answer", "error_type"),
    [(httpx.Response(401, json={"message": "sk-secret-key is wrong"}), "401"), (None, "ConnectError")],
)
async def test_a_failed_novu_request_is_an_error_span_naming_only_the_error_type(
    answer: httpx.Response | None, error_type: str
) -> None:
    def novu(request: httpx.Request) -> httpx.Response:
        if answer is None:
            raise httpx.ConnectError("connection refused to sk-secret-key", request=request)
        return answer

    tracing, exporter = _in_memory()
    async with NovuClient("http://novu", "sk-secret-key", transport=httpx.MockTransport(novu), tracing=tracing) as c:
        ok, _ = await c.check_auth()
    assert not ok
    [span] = exporter.get_finished_spans()
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes and span.attributes["error.type"] == error_type
    assert "secret" not in repr((span.attributes, span.events, span.status.description))


def test_tracing_off_makes_no_span_and_sends_no_traceparent() -> None:
    headers: dict[str, str] = {}
    tracing = Tracing.off()
    with tracing.client_span("GET", {"url.full": "http://x"}) as span:
        tracing.inject(headers)
        span.set_attribute("http.response.status_code", 200)
        span.fail("500")
    assert headers == {}
