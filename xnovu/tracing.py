"""Traces over OTLP: decided once at the entry point from the standard `OTEL_*` variables, then passed down.

    OTEL_EXPORTER_OTLP_ENDPOINT unset  ->  Tracing.off(): every hook is a no-op and OpenTelemetry is never imported
    OTEL_EXPORTER_OTLP_ENDPOINT set    ->  OtelTracing: an SDK TracerProvider with an OTLP exporter (http/protobuf or
                                           grpc, OTEL_EXPORTER_OTLP[_TRACES]_PROTOCOL), feeding
                                             - Temporal's TracingInterceptor (client + worker: workflow/activity spans)
                                             - the httpx instrumentation on the Novu client (one span per request)
                                             - the asyncpg instrumentation (one span per statement)
                                             - `span()`: the few hand-made spans no library makes (Novu attributes)

The provider is never installed as the global one: it is handed to each instrumentation, so tests (and embedders)
can pass their own provider, and a process can build more than one (README "Observability").
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit, urlunsplit

from xnovu import __version__
from xnovu.errors import ConfigError

if TYPE_CHECKING:  # only for annotations: importing them costs nothing when tracing is off
    import httpx
    from opentelemetry.sdk.trace import TracerProvider
    from temporalio.client import Interceptor

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'xnovu[otel]'"
PROTOCOLS = ("http/protobuf", "grpc")
#: Request headers the httpx instrumentation must redact even when an operator asks it to capture headers:
#: the Novu key travels in Authorization.
SENSITIVE_HEADERS = ("authorization", "cookie", "set-cookie", "proxy-authorization")
_CAPTURE_REQUEST = "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_CLIENT_REQUEST"
_CAPTURE_RESPONSE = "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_CLIENT_RESPONSE"
_SANITIZE = "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SANITIZE_FIELDS"
_INSTRUMENTATIONS = (
    "opentelemetry.instrumentation.asyncpg",
    "opentelemetry.instrumentation.httpx",
    "temporalio.contrib.opentelemetry",
)


class SpanLike(Protocol):
    """What xnovu does with a span: add attributes once the outcome is known."""

    def set_attribute(self, key: str, value: Any) -> None: ...


class _NoSpan:
    def set_attribute(self, key: str, value: Any) -> None:
        return None


_NO_SPAN = _NoSpan()


@dataclass(frozen=True)
class ExporterState:
    """The trace exporter as /status and `xnovu worker health` show it (never a credential)."""

    enabled: bool
    endpoint: str | None = None
    """Without user info, query or fragment: credentials usually travel in OTEL_EXPORTER_OTLP_HEADERS, never shown."""
    protocol: str | None = None
    service_name: str | None = None

    def as_dict(self) -> dict[str, Any]:
        if not self.enabled:
            return {"enabled": False}
        return {
            "enabled": True,
            "endpoint": self.endpoint,
            "protocol": self.protocol,
            "service_name": self.service_name,
        }


class Tracing:
    """Tracing switched off: the hooks do nothing, cost nothing and import nothing."""

    def __init__(self, state: ExporterState | None = None) -> None:
        self.state = state or ExporterState(enabled=False)

    @classmethod
    def off(cls) -> Tracing:
        return cls()

    @property
    def enabled(self) -> bool:
        return False

    def temporal_interceptors(self) -> Sequence[Interceptor]:
        """Interceptors for `Client.connect` (a worker built on that client inherits them)."""
        return ()

    def instrument_httpx(self, client: httpx.AsyncClient) -> None:
        """Trace every request of this client."""

    def instrument_asyncpg(self) -> None:
        """Trace every asyncpg statement of this process."""

    @contextlib.contextmanager
    def span(self, name: str, attributes: Mapping[str, Any] | None = None) -> Iterator[SpanLike]:
        """A hand-made span, current for the block."""
        yield _NO_SPAN

    def shutdown(self) -> None:
        """Flush pending spans and stop exporting (the entry point that built this calls it once)."""


class OtelTracing(Tracing):
    """Tracing on a given SDK TracerProvider (built from OTEL_* by :func:`tracing_from_environ`, or by a test)."""

    def __init__(self, provider: TracerProvider, state: ExporterState | None = None, *, owns_provider: bool = True):
        super().__init__(state or ExporterState(enabled=True, protocol="custom"))
        self.provider = provider
        self.tracer = provider.get_tracer("xnovu", __version__)
        self._owns_provider = owns_provider
        self._asyncpg: Any = None
        self._interceptor: Interceptor | None = None

    @property
    def enabled(self) -> bool:
        return True

    def temporal_interceptors(self) -> Sequence[Interceptor]:
        if self._interceptor is None:
            from temporalio.contrib.opentelemetry import TracingInterceptor

            # Polls are started by Temporal schedules, so no client span precedes them: without
            # always_create_workflow_spans their workflow spans (and so the notification trace) would not exist.
            self._interceptor = TracingInterceptor(self.tracer, always_create_workflow_spans=True)
        return (self._interceptor,)

    def instrument_httpx(self, client: httpx.AsyncClient) -> None:
        from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

        with _header_capture_sanitized():
            HTTPXClientInstrumentor.instrument_client(client, tracer_provider=self.provider)

    def instrument_asyncpg(self) -> None:
        from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor

        # Statement parameters are payload values and recipients: never recorded.
        instrumentor = AsyncPGInstrumentor(capture_parameters=False)  # type: ignore[no-untyped-call]
        if instrumentor.is_instrumented_by_opentelemetry:
            return  # one per process (it patches asyncpg's classes)
        instrumentor.instrument(tracer_provider=self.provider)
        self._asyncpg = instrumentor

    @contextlib.contextmanager
    def span(self, name: str, attributes: Mapping[str, Any] | None = None) -> Iterator[SpanLike]:
        with self.tracer.start_as_current_span(name, attributes=dict(attributes or {})) as span:
            yield span

    def shutdown(self) -> None:
        if self._asyncpg is not None:
            with contextlib.suppress(Exception):
                self._asyncpg.uninstrument()
            self._asyncpg = None
        if self._owns_provider:
            self.provider.shutdown()  # flushes the batch processor


@contextlib.contextmanager
def _header_capture_sanitized() -> Iterator[None]:
    """While the httpx instrumentation reads its header settings, make sure credentials are on its redact list.

    The instrumentation records headers only when an operator opts in (OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_*);
    even then the Novu key (Authorization) must come out as "[REDACTED]". It reads these variables from os.environ
    when a client is instrumented, so they are amended for that moment only.
    """
    if not (os.environ.get(_CAPTURE_REQUEST) or os.environ.get(_CAPTURE_RESPONSE)):
        yield
        return
    before = os.environ.get(_SANITIZE)
    names = [n for n in (before or "").split(",") if n.strip()]
    os.environ[_SANITIZE] = ",".join([*names, *SENSITIVE_HEADERS])
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(_SANITIZE, None)
        else:
            os.environ[_SANITIZE] = before


def redact_endpoint(url: str) -> str:
    """scheme://host:port/path of an endpoint: user info, query and fragment dropped (they can carry tokens)."""
    parts = urlsplit(url.strip())
    if not parts.scheme or not parts.netloc:
        return "(invalid)"
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    netloc = f"{host}:{port}" if port is not None else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def exporter_settings(environ: Mapping[str, str]) -> ExporterState:
    """What the standard variables ask for (the OTel SDK reads the same ones; this only decides on/off and shows)."""
    disabled = environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true"
    endpoint = (
        environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
        or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
    )
    exporter = environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower()
    if disabled or not endpoint or exporter == "none":
        return ExporterState(enabled=False)
    protocol = (
        environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "").strip()
        or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "").strip()
        or "http/protobuf"
    ).lower()
    if protocol not in PROTOCOLS:
        raise ConfigError(
            f"OTEL_EXPORTER_OTLP_PROTOCOL: must be one of {', '.join(PROTOCOLS)} (got {protocol!r}); "
            "fix it in the environment"
        )
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(
            "OTEL_EXPORTER_OTLP_ENDPOINT: must be an http(s) URL such as http://localhost:4318 "
            f"(got {redact_endpoint(endpoint)!r}); fix it in the environment"
        )
    service = environ.get("OTEL_SERVICE_NAME", "").strip() or "xnovu"
    return ExporterState(enabled=True, endpoint=redact_endpoint(endpoint), protocol=protocol, service_name=service)


def load_otel_dotenv(path: str = ".env") -> None:
    """Let `.env` carry the OTEL_* variables like every other setting: the SDK reads the process environment only,
    so those `.env` lines not already set in the environment are copied into it (at the entry point, once)."""
    try:
        from dotenv import dotenv_values
    except ImportError:  # pydantic-settings brings python-dotenv; without it `.env` is not read at all
        return
    for key, value in dotenv_values(path).items():
        if key.startswith("OTEL_") and value is not None and key not in os.environ:
            os.environ[key] = value


def tracing_from_environ(environ: Mapping[str, str] | None = None) -> Tracing:
    """The entry point's one decision: off unless an OTLP endpoint is configured.

    Endpoint, headers, timeouts, sampler, batch sizes and resource attributes are read by the OpenTelemetry SDK
    itself from the standard variables; a missing extra is one readable line naming the fix.
    """
    env = os.environ if environ is None else environ
    state = exporter_settings(env)
    if not state.enabled:
        return Tracing.off()
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        if state.protocol == "grpc":
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        else:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # type: ignore[assignment]
                OTLPSpanExporter,
            )
        # Fail now, naming the fix, rather than at the first span.
        for module in _INSTRUMENTATIONS:
            importlib.import_module(module)
    except ImportError as exc:
        raise ConfigError(
            f"OTEL_EXPORTER_OTLP_ENDPOINT is set but the tracing libraries are missing ({exc.name}); "
            f"run: {INSTALL_HINT}"
        ) from None
    attributes: dict[str, Any] = {"service.version": __version__}
    if not env.get("OTEL_SERVICE_NAME", "").strip():
        attributes["service.name"] = "xnovu"
    provider = TracerProvider(resource=Resource.create(attributes))  # sampler from OTEL_TRACES_SAMPLER
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    log.info("trace export on", extra={"endpoint": state.endpoint, "protocol": state.protocol})
    return OtelTracing(provider, state)
