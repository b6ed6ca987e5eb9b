"""TLS from the settings and what a failed connect means (xnovu/temporal/connection.py), without a server.

The texts below are the Temporal client's own, captured from real failures; tests/integration/test_temporal_tls.py
produces the others through a real TLS proxy. These cover what that proxy cannot: a TLS alert (how a server that
checks the client certificate in the handshake refuses it), PERMISSION_DENIED, a server certificate for another name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from temporalio.client import TLSConfig

from xnovu.config import Settings
from xnovu.errors import ConfigError, TemporalUnavailableError
from xnovu.temporal.connection import connect_failure, tls_config

API_KEY = "tmprl-key-NEVER-SHOWN-5e2a"
CERT = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
KEY = b"-----BEGIN PRIVATE KEY-----\nSECRET-KEY-BYTES\n-----END PRIVATE KEY-----\n"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No TEMPORAL_* variable of the developer's shell may reach these settings."""
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)


def settings(**values: Any) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@pytest.fixture
def pem(tmp_path: Path) -> dict[str, Path]:
    files = {"cert": CERT, "key": KEY, "ca": CERT, "encrypted": KEY.replace(b"PRIVATE", b"ENCRYPTED PRIVATE")}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    return {name: tmp_path / name for name in files}


def test_no_tls_for_the_dev_server_and_system_roots_for_an_api_key() -> None:
    assert tls_config(settings()) is False
    assert tls_config(settings(temporal_api_key=API_KEY)) is True


def test_a_server_ca_turns_tls_on_alone_or_with_a_client_certificate(pem: dict[str, Path]) -> None:
    alone = tls_config(settings(temporal_tls_server_ca=pem["ca"]))
    assert isinstance(alone, TLSConfig) and alone.server_root_ca_cert == CERT and alone.client_cert is None
    mtls = tls_config(
        settings(temporal_tls_cert=pem["cert"], temporal_tls_key=pem["key"], temporal_tls_server_ca=pem["ca"])
    )
    assert isinstance(mtls, TLSConfig)
    assert (mtls.server_root_ca_cert, mtls.client_cert, mtls.client_private_key) == (CERT, CERT, KEY)
    with_key = tls_config(settings(temporal_api_key=API_KEY, temporal_tls_server_ca=pem["ca"]))
    assert isinstance(with_key, TLSConfig) and with_key.client_cert is None


@pytest.mark.parametrize(
    ("values", "starts", "says"),
    [
        ({"temporal_tls_cert": "cert"}, "TEMPORAL_TLS_CERT and TEMPORAL_TLS_KEY", "set together"),
        ({"temporal_tls_cert": "cert", "temporal_tls_key": "missing"}, "TEMPORAL_TLS_KEY: ", "cannot read"),
        ({"temporal_tls_cert": "key", "temporal_tls_key": "key"}, "TEMPORAL_TLS_CERT: ", "no PEM certificate"),
        ({"temporal_tls_cert": "cert", "temporal_tls_key": "cert"}, "TEMPORAL_TLS_KEY: ", "no PEM private key"),
        ({"temporal_tls_cert": "cert", "temporal_tls_key": "encrypted"}, "TEMPORAL_TLS_KEY: ", "is encrypted"),
        ({"temporal_tls_server_ca": "key"}, "TEMPORAL_TLS_SERVER_CA: ", "no PEM certificate"),
    ],
)
def test_a_tls_file_that_cannot_serve_is_one_line_naming_the_setting(
    pem: dict[str, Path], tmp_path: Path, values: dict[str, str], starts: str, says: str
) -> None:
    with pytest.raises(ConfigError) as info:
        tls_config(settings(**{k: pem.get(v, tmp_path / v) for k, v in values.items()}))
    message = str(info.value)
    assert message.startswith(starts) and says in message and "\n" not in message, message
    assert "SECRET-KEY-BYTES" not in message


def failure(text: str, **values: Any) -> ConfigError | TemporalUnavailableError:
    error = connect_failure(text, settings(temporal_address="tmprl.example:7233", **values), "ns.acct")
    assert isinstance(error, ConfigError | TemporalUnavailableError)
    assert "\n" not in str(error) and API_KEY not in str(error)
    return error


MTLS = {"temporal_tls_cert": Path("/certs/client.pem"), "temporal_tls_key": Path("/certs/client.key")}


def test_a_certificate_refused_in_the_handshake_names_the_certificate() -> None:
    text = (
        "Failed client connect: Server connection error: tonic::transport::Error(Transport, ConnectError(Custom { "
        "kind: InvalidData, error: AlertReceived(BadCertificate) }))"
    )
    error = failure(text, **MTLS)
    assert isinstance(error, ConfigError)
    assert str(error).startswith("TEMPORAL_TLS_CERT: Temporal at tmprl.example:7233 refused the client certificate")
    assert "TLS alert BadCertificate" in str(error) and "namespace ns.acct" in str(error)


def test_permission_denied_for_an_api_key_names_the_key() -> None:
    text = (
        "Failed client connect: `get_system_info` call error after connection: Status { code: PermissionDenied, "
        'message: "Request unauthorized.", metadata: MetadataMap { headers: {} }, source: None }'
    )
    error = failure(text, temporal_api_key=SecretStr(API_KEY))
    assert str(error).startswith("TEMPORAL_API_KEY: ") and "PERMISSION_DENIED: Request unauthorized." in str(error)


def test_a_server_certificate_for_another_name_names_the_address() -> None:
    text = (
        "Failed client connect: Server connection error: tonic::transport::Error(Transport, ConnectError(Custom { "
        'kind: InvalidData, error: InvalidCertificate(NotValidForNameContext { expected: DnsName("tmprl.example"), '
        'presented: ["DnsName(\\"other.example\\")"] }) }))'
    )
    error = failure(text, temporal_api_key=SecretStr(API_KEY))
    assert isinstance(error, ConfigError)
    assert str(error).startswith("TEMPORAL_ADDRESS: the certificate of Temporal at tmprl.example:7233 is not valid")


def test_an_unreachable_server_stays_retryable() -> None:
    text = (
        "Failed client connect: Server connection error: tonic::transport::Error(Transport, ConnectError("
        'ConnectError("tcp connect error", 127.0.0.1:1, Os { code: 111, kind: ConnectionRefused, message: '
        '"Connection refused" })))'
    )
    error = failure(text, **MTLS)
    assert isinstance(error, TemporalUnavailableError) and "TEMPORAL_ADDRESS" in str(error)
