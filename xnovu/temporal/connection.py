"""Connecting to Temporal: local dev server, self-hosted cluster (mTLS) or Temporal Cloud (API key)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

from temporalio.client import Client, Interceptor, TLSConfig
from temporalio.service import RPCError

from xnovu.config import Settings
from xnovu.errors import ConfigError, TemporalUnavailableError


def tls_config(settings: Settings) -> TLSConfig | bool:
    """mTLS from TEMPORAL_TLS_CERT/KEY files; plain TLS when an API key is used (Temporal Cloud); else none."""
    cert, key = settings.temporal_tls_cert, settings.temporal_tls_key
    if (cert is None) != (key is None):
        raise ConfigError("TEMPORAL_TLS_CERT and TEMPORAL_TLS_KEY must be set together (paths to PEM files)")
    if cert is not None and key is not None:
        try:
            return TLSConfig(client_cert=cert.read_bytes(), client_private_key=key.read_bytes())
        except OSError as exc:
            raise ConfigError(
                f"TEMPORAL_TLS_CERT/TEMPORAL_TLS_KEY: cannot read {exc.filename}: {exc.strerror}"
            ) from None
    return settings.temporal_api_key is not None


async def connect_temporal(
    settings: Settings, *, namespace: str | None = None, interceptors: Sequence[Interceptor] = ()
) -> Client:
    """A client for TEMPORAL_NAMESPACE (or `namespace`), or a one-line error saying what to check.

    `interceptors` (the tracing interceptor, see xnovu.tracing) also apply to every worker built on the client.
    """
    api_key = settings.temporal_api_key.get_secret_value() if settings.temporal_api_key else None
    try:
        return await Client.connect(
            settings.temporal_address,
            namespace=namespace or settings.temporal_namespace,
            api_key=api_key,
            tls=tls_config(settings),
            connect_timeout=timedelta(seconds=10),
            interceptors=interceptors,
        )
    except (RPCError, RuntimeError, OSError) as exc:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if api_key:
            message = message.replace(api_key, "***")
        raise TemporalUnavailableError(
            f"cannot connect to Temporal at {settings.temporal_address}: {message}; "
            "check TEMPORAL_ADDRESS (and TEMPORAL_API_KEY / TLS settings), or run `xnovu dev`"
        ) from None
