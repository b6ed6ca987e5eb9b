"""Traces over OTLP: decided once at the entry point from the standard `OTEL_*` variables, then passed down.

    OTEL_EXPORTER_OTLP_ENDPOINT unset  ->  Tracing.off(): every hook is a no-op and OpenTelemetry is never imported
    OTEL_EXPORTER_OTLP_ENDPOINT set    ->  OtelTracing: an SDK TracerProvider with an OTLP exporter (http/protobuf or
                                           grpc, OTEL_EXPORTER_OTLP[_TRACES]_PROTOCOL), feeding
                                             - Temporal's TracingInterceptor (client + worker: workflow/activity spans)
                                             - `client_span()`: one span per Novu request (xnovu/novu/client.py) and
                                               per SQL statement (xnovu/db/traced.py), made by xnovu itself
                                             - `span()`: the spans only xnovu knows (Novu attributes, manual starts)

Requests and statements are traced here rather than by the contrib instrumentations (opentelemetry-instrumentation-
httpx/-asyncpg): those pin their own OpenTelemetry releases exactly, and the pip bundled with Python 3.11 cannot
resolve that web (README "Installation and dependencies"). The provider is never installed as the global one: it is
handed to Temporal's interceptor and used by xnovu's own spans, so tests (and embedders) can pass their own provider,
and a process can build more than one (README "Observability").
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
from collections.abc import Iterator, Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit, urlunsplit

from xnovu import __version__
from xnovu.errors import ConfigError

if TYPE_CHECKING:  # only for annotations: importing them costs nothing when tracing is off
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Span
    from temporalio.client import Interceptor

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'xnovu[otel]'"
PROTOCOLS = ("http/protobuf", "grpc")


class SpanLike(Protocol):
    """What xnovu does with a span: add attributes once the outcome is known."""

    def set_attribute(self, key: str, value: Any) -> None: ...


class ClientSpanLike(SpanLike, Protocol):
    """A span around one call out of the process, which can fail without an exception (an HTTP error status)."""

    def fail(self, error_type: str) -> None:
        """Mark the call failed with a short, low-cardinality `error.type` (a status code, an exception class)."""


class _NoSpan:
    def set_attribute(self, key: str, value: Any) -> None:
        return None

    def fail(self, error_type: str) -> None:
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

    @contextlib.contextmanager
    def span(self, name: str, attributes: Mapping[str, Any] | None = None) -> Iterator[SpanLike]:
        """A hand-made span, current for the block."""
        yield _NO_SPAN

    @contextlib.contextmanager
    def client_span(self, name: str, attributes: Mapping[str, Any]) -> Iterator[ClientSpanLike]:
        """A CLIENT span around one call to another system (an HTTP request, a SQL statement), current for the block.

        An exception leaving the block marks it failed by its class alone: exception messages can quote values (a
        payload, a URL with a token), so none is recorded.
        """
        yield _NO_SPAN

    def inject(self, headers: MutableMapping[str, str]) -> None:
        """Put the current trace context into outgoing request headers (W3C `traceparent`, or OTEL_PROPAGATORS)."""

    def shutdown(self) -> None:
        """Flush pending spans and stop exporting (the entry point that built this calls it once)."""


class OtelTracing(Tracing):
    """Tracing on a given SDK TracerProvider (built from OTEL_* by :func:`tracing_from_environ`, or by a test)."""

    def __init__(self, provider: TracerProvider, state: ExporterState | None = None, *, owns_provider: bool = True):
        super().__init__(state or ExporterState(enabled=True, protocol="custom"))
        self.provider = provider
        self.tracer = provider.get_tracer("xnovu", __version__)
        self._owns_provider = owns_provider
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

    @contextlib.contextmanager
    def span(self, name: str, attributes: Mapping[str, Any] | None = None) -> Iterator[SpanLike]:
        with self.tracer.start_as_current_span(name, attributes=dict(attributes or {})) as span:
            yield span

    @contextlib.contextmanager
    def client_span(self, name: str, attributes: Mapping[str, Any]) -> Iterator[ClientSpanLike]:
        from opentelemetry.trace import SpanKind

        with self.tracer.start_as_current_span(
            name,
            kind=SpanKind.CLIENT,
            attributes=dict(attributes),
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            client = _ClientSpan(span)
            try:
                yield client
            except BaseException as exc:  # a cancelled call did not complete either
                client.fail(type(exc).__qualname__)
                raise

    def inject(self, headers: MutableMapping[str, str]) -> None:
        from opentelemetry import propagate

        propagate.inject(headers)

    def shutdown(self) -> None:
        if self._owns_provider:
            self.provider.shutdown()  # flushes the batch processor


class _ClientSpan:
    def __init__(self, span: Span) -> None:
        self._span = span

    def set_attribute(self, key: str, value: Any) -> None:
        self._span.set_attribute(key, value)

    def fail(self, error_type: str) -> None:
        from opentelemetry.trace import Status, StatusCode

        self._span.set_attribute("error.type", error_type)
        self._span.set_status(Status(StatusCode.ERROR))


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
        importlib.import_module("temporalio.contrib.opentelemetry")
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
