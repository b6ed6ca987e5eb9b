"""Connecting to Temporal: local dev server, self-hosted cluster (mTLS) or Temporal Cloud (mTLS or API key).

A connection that fails because of a setting (a refused certificate or key, a server certificate not trusted, a key
that is not the certificate's) is a ConfigError naming that setting: no retry can fix it, so a worker stops at once.
Anything else is a TemporalUnavailableError, which a starting worker waits out (xnovu/worker/composition.py).
tests/integration/test_temporal_tls.py drives both ways in through a real TLS proxy.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

from temporalio.client import Client, Interceptor, TLSConfig
from temporalio.service import RPCError

from xnovu.config import Settings
from xnovu.errors import ConfigError, TemporalUnavailableError, XnovuError

_CERTIFICATE = re.compile(rb"-----BEGIN CERTIFICATE-----")
_PRIVATE_KEY = re.compile(rb"-----BEGIN (?:RSA |EC )?PRIVATE KEY-----")
_ENCRYPTED_KEY = re.compile(rb"-----BEGIN ENCRYPTED PRIVATE KEY-----")


def _read_pem(path: Path, variable: str, *, private_key: bool = False) -> bytes:
    """The file's bytes, or a ConfigError naming `variable` when it cannot hold what the setting needs.

    The client would ignore a CA file without a certificate and only fail later with "unknown issuer"; the file's
    content is never shown (a key is a secret).
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{variable}: cannot read {path}: {exc.strerror}") from None
    if private_key:
        if _ENCRYPTED_KEY.search(data):
            raise ConfigError(
                f"{variable}: {path} is encrypted; give the key without a passphrase "
                f"(openssl pkey -in {path.name} -out plain.key)"
            )
        if not _PRIVATE_KEY.search(data):
            raise ConfigError(f"{variable}: {path} holds no PEM private key (-----BEGIN PRIVATE KEY-----)")
    elif not _CERTIFICATE.search(data):
        raise ConfigError(f"{variable}: {path} holds no PEM certificate (-----BEGIN CERTIFICATE-----)")
    return data


def tls_config(settings: Settings) -> TLSConfig | bool:
    """TLS from the settings: mTLS with TEMPORAL_TLS_CERT/KEY, a private CA with TEMPORAL_TLS_SERVER_CA, system roots
    when only an API key is set (Temporal Cloud); no TLS without any of them (the dev server)."""
    cert, key, ca = settings.temporal_tls_cert, settings.temporal_tls_key, settings.temporal_tls_server_ca
    if (cert is None) != (key is None):
        raise ConfigError("TEMPORAL_TLS_CERT and TEMPORAL_TLS_KEY must be set together (paths to PEM files)")
    if cert is None and ca is None:
        return settings.temporal_api_key is not None
    return TLSConfig(
        server_root_ca_cert=_read_pem(ca, "TEMPORAL_TLS_SERVER_CA") if ca is not None else None,
        client_cert=_read_pem(cert, "TEMPORAL_TLS_CERT") if cert is not None else None,
        client_private_key=_read_pem(key, "TEMPORAL_TLS_KEY", private_key=True) if key is not None else None,
    )


async def connect_temporal(
    settings: Settings, *, namespace: str | None = None, interceptors: Sequence[Interceptor] = ()
) -> Client:
    """A client for TEMPORAL_NAMESPACE (or `namespace`), or a one-line error saying what to check.

    `interceptors` (the tracing interceptor, see xnovu.tracing) also apply to every worker built on the client.
    """
    api_key = settings.temporal_api_key.get_secret_value() if settings.temporal_api_key else None
    tls = tls_config(settings)
    try:
        return await Client.connect(
            settings.temporal_address,
            namespace=namespace or settings.temporal_namespace,
            api_key=api_key,
            tls=tls,
            connect_timeout=timedelta(seconds=10),
            interceptors=interceptors,
        )
    except (RPCError, RuntimeError, OSError) as exc:
        text = str(exc) or type(exc).__name__
        if api_key:
            text = text.replace(api_key, "***")
        raise connect_failure(text, settings, namespace or settings.temporal_namespace) from None


# -- what a failed connect means ------------------------------------------------------------------------------------
# The Temporal client (Rust core: tonic over rustls) reports a failed connect as one RuntimeError whose text carries the
# transport error or the gRPC status of its first call, e.g.
#   ... Transport, InconsistentKeys(KeyMismatch) ...
#   ... error: InvalidCertificate(UnknownIssuer) ...
#   ... Status { code: Unauthenticated, message: "Request unauthorized", ...
#   ... while receiving response with status: 400 Bad Request ...   (a TLS proxy refusing the client certificate)

_STATUS = re.compile(r'code: (Unauthenticated|PermissionDenied), message: "((?:[^"\\]|\\.)*)"')
_HTTP_REFUSAL = re.compile(r"with status: (40[013]) ([A-Za-z ]+)")
_ALERT = re.compile(r"AlertReceived\((\w+)\)")
_UNTRUSTED = re.compile(r"InvalidCertificate\((\w+)")
_CODE_NAMES = {"Unauthenticated": "UNAUTHENTICATED", "PermissionDenied": "PERMISSION_DENIED"}


def connect_failure(text: str, settings: Settings, namespace: str) -> XnovuError:
    """The error for a failed connect whose client error reads `text` (secrets already masked)."""
    address, cert, key, ca = (
        settings.temporal_address,
        settings.temporal_tls_cert,
        settings.temporal_tls_key,
        settings.temporal_tls_server_ca,
    )
    if "KeyMismatch" in text:
        return ConfigError(
            f"TEMPORAL_TLS_KEY: {key} is not the private key of the certificate in TEMPORAL_TLS_CERT ({cert}); "
            "set both to the files of one pair"
        )
    if "PrivateKeyParseError" in text:
        return ConfigError(f"TEMPORAL_TLS_KEY: {key} holds no private key the client can read (PKCS#8, EC or RSA PEM)")
    if "NoCertificatesPresented" in text:
        return ConfigError(f"TEMPORAL_TLS_CERT: {cert} holds no certificate the client can read")
    untrusted = _UNTRUSTED.search(text)
    if untrusted:
        return _untrusted_server(untrusted.group(1), address, ca)
    refusal = _refusal(text)
    if refusal is not None:
        return _refused(refusal, settings, namespace)
    if "InvalidContentType" in text:
        turned_on = [
            name
            for name, value in (
                ("TEMPORAL_API_KEY", settings.temporal_api_key),
                ("TEMPORAL_TLS_CERT", cert),
                ("TEMPORAL_TLS_SERVER_CA", ca),
            )
            if value is not None
        ]
        which = ", ".join(turned_on) or "a TLS setting"
        return ConfigError(
            f"TEMPORAL_ADDRESS: Temporal at {address} does not answer TLS, which {which} turns on; "
            "point TEMPORAL_ADDRESS at the TLS endpoint, or unset those for a server without TLS"
        )
    first = text.splitlines()[0]
    return TemporalUnavailableError(
        f"cannot connect to Temporal at {address}: {first}; "
        "check TEMPORAL_ADDRESS (and TEMPORAL_API_KEY / TLS settings), or run `xnovu dev`"
    )


def _refusal(text: str) -> str | None:
    """How the server refused the credentials (or their absence), or None when it did not."""
    status = _STATUS.search(text)
    if status:
        detail = status.group(2).replace('\\"', '"')
        return f"{_CODE_NAMES[status.group(1)]}: {detail[:160]}"
    http = _HTTP_REFUSAL.search(text)
    if http:
        return f"HTTP {http.group(1)} {http.group(2).strip()} instead of a gRPC answer"
    alert = _ALERT.search(text)
    if alert:
        return f"TLS alert {alert.group(1)}"
    return None


def _refused(refusal: str, settings: Settings, namespace: str) -> ConfigError:
    address = settings.temporal_address
    has_key, has_cert = settings.temporal_api_key is not None, settings.temporal_tls_cert is not None
    if has_key and not has_cert:
        return ConfigError(
            f"TEMPORAL_API_KEY: Temporal at {address} refused the key ({refusal}); "
            f"check that it is a current API key with access to namespace {namespace}"
        )
    if has_cert and not has_key:
        return ConfigError(
            f"TEMPORAL_TLS_CERT: Temporal at {address} refused the client certificate ({refusal}); "
            "check that TEMPORAL_TLS_CERT and TEMPORAL_TLS_KEY are a pair signed by a CA the server trusts "
            f"(on Temporal Cloud: a CA certificate added to namespace {namespace})"
        )
    if has_key and has_cert:
        return ConfigError(
            f"TEMPORAL_API_KEY or TEMPORAL_TLS_CERT: Temporal at {address} refused the credentials ({refusal}); "
            f"check both are valid for namespace {namespace}"
        )
    return ConfigError(
        f"TEMPORAL_API_KEY or TEMPORAL_TLS_CERT: Temporal at {address} refused a connection without credentials "
        f"({refusal}); set TEMPORAL_API_KEY, or TEMPORAL_TLS_CERT and TEMPORAL_TLS_KEY"
    )


def _untrusted_server(reason: str, address: str, ca: Path | None) -> ConfigError:
    if reason.startswith("NotValidForName"):
        host = address.rpartition(":")[0]
        return ConfigError(
            f"TEMPORAL_ADDRESS: the certificate of Temporal at {address} is not valid for {host}; "
            "use a host name the certificate carries"
        )
    if reason not in ("UnknownIssuer", "BadSignature"):
        return ConfigError(f"TEMPORAL_ADDRESS: the certificate of Temporal at {address} is refused ({reason})")
    if ca is None:
        return ConfigError(
            f"TEMPORAL_TLS_SERVER_CA: the certificate of Temporal at {address} is not signed by a trusted CA "
            f"({reason}); set TEMPORAL_TLS_SERVER_CA to the PEM file of the CA that signed it"
        )
    return ConfigError(
        f"TEMPORAL_TLS_SERVER_CA: the certificate of Temporal at {address} is not signed by the CA in {ca} "
        f"({reason}); set it to the PEM file of the CA that signed the server's certificate"
    )
