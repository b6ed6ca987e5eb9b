"""Temporal Cloud's two ways in, tested for real: TLS with a client certificate (mTLS) and TLS with an API key.

nginx (tests/tlsproxy.py) terminates TLS in front of the session's dev server: one listener requires a client
certificate of the test CA, the other `authorization: Bearer <key>`. Through each, `xnovu bootstrap`, a worker and one
notification SENT through the emulator; then wrong credentials, which must stop the worker or the command at once with
one line naming the setting to fix, and never print the key. Without nginx (Debian: apt-get install nginx-light;
`.ci/run` installs it) or the openssl command, these tests skip.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from tests.e2e.conftest import Cli, start_xnovu
from tests.support import DB_PASSWORD, NOVU_SECRET, Env, Stack, eventually
from tests.tlsproxy import TlsProxy, make_certificates, nginx_binary, openssl_binary, start_tls_proxy
from xnovu.errors import ConfigError
from xnovu.temporal.connection import connect_temporal

#: The key the proxy accepts, and one it refuses: recognisable, so a test can tell neither is ever printed (I6).
API_KEY = "tmprl-key-SHOULD-NEVER-APPEAR-4d1e"
WRONG_KEY = "tmprl-wrong-SHOULD-NEVER-APPEAR-0b7a"
SECRETS = (API_KEY, WRONG_KEY, NOVU_SECRET, DB_PASSWORD)
SERVICE = "temporal.api.workflowservice.v1.WorkflowService/"


@pytest.fixture(scope="module")
def proxy(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsProxy]:
    nginx, openssl = nginx_binary(), openssl_binary()
    if nginx is None:
        pytest.skip("nginx is not installed (Debian/Ubuntu: apt-get install nginx-light; .ci/run installs it)")
    if openssl is None:
        pytest.skip("the openssl command is not installed (Debian/Ubuntu: apt-get install openssl)")
    folder = tmp_path_factory.mktemp("tlsproxy")
    certs = make_certificates(folder / "certs", openssl)
    running = start_tls_proxy(folder, stack.temporal.address, API_KEY, nginx, certs)
    try:
        yield running
    finally:
        running.stop()


def through(proxy: TlsProxy, door: str, **changes: Any) -> dict[str, Any]:
    """The settings that reach Temporal through one door of the proxy (`changes` win; None unsets one)."""
    certs = proxy.certs
    values: dict[str, Any] = {"temporal_tls_server_ca": certs.ca}
    if door == "mtls":
        values |= {
            "temporal_address": proxy.mtls_address,
            "temporal_tls_cert": certs.client.cert,
            "temporal_tls_key": certs.client.key,
        }
    else:
        values |= {"temporal_address": proxy.api_key_address, "temporal_api_key": SecretStr(API_KEY)}
    return values | changes


def port_of(proxy: TlsProxy, door: str) -> int:
    return proxy.mtls_port if door == "mtls" else proxy.api_key_port


@pytest.mark.fresh_namespace
@pytest.mark.parametrize("door", ["mtls", "api-key"])
async def test_bootstrap_a_worker_and_a_notification_through_the_tls_proxy(
    env: Env, proxy: TlsProxy, door: str, tmp_path: Path
) -> None:
    via = through(proxy, door)
    cli = Cli(env.settings.model_copy(update=via), tmp_path, extra_secrets=SECRETS)
    seen = len(proxy.requests(port_of(proxy, door)))

    out = (await cli("bootstrap")).ok().stdout
    assert "namespace: created" in out and "schedule xnovu-poll-new: created" in out, out
    wf = await env.workflow("welcome")
    [nid] = await env.insert(wf, recipients=2)
    async with env.worker(**via):
        await eventually(lambda: env.all_in([nid], "SENT"), timeout=30)
    assert env.stats()["deliveries"] == 2 and env.stats()["duplicate_deliveries"] == 0

    calls = {call.removeprefix(SERVICE) for call in proxy.requests(port_of(proxy, door))[seen:]}
    # Bootstrap's namespace and schedules, and the worker's task round trips, all went through this door.
    assert {"RegisterNamespace", "CreateSchedule", "RespondWorkflowTaskCompleted"} <= calls, calls
    assert "RespondActivityTaskCompleted" in calls, calls


#: door, changes to its good settings (None unsets), a setting the one-line error must start with.
WRONG: list[Any] = [
    pytest.param("mtls", {"temporal_tls_cert": "stranger.cert", "temporal_tls_key": "stranger.key"},
                 "TEMPORAL_TLS_CERT", id="certificate-of-another-ca"),
    pytest.param("mtls", {"temporal_tls_key": "stranger.key"}, "TEMPORAL_TLS_KEY", id="key-of-another-certificate"),
    pytest.param("mtls", {"temporal_tls_cert": None, "temporal_tls_key": None}, "TEMPORAL_TLS_CERT",
                 id="no-client-certificate"),
    pytest.param("mtls", {"temporal_tls_server_ca": None}, "TEMPORAL_TLS_SERVER_CA", id="server-ca-unset"),
    pytest.param("mtls", {"temporal_tls_server_ca": "stranger.cert"}, "TEMPORAL_TLS_SERVER_CA",
                 id="server-ca-of-another-ca"),
    pytest.param("api-key", {"temporal_api_key": SecretStr(WRONG_KEY)}, "TEMPORAL_API_KEY", id="wrong-api-key"),
    pytest.param("api-key", {"temporal_api_key": None}, "TEMPORAL_API_KEY", id="no-api-key"),
    pytest.param("api-key", {"temporal_address": "dev-server", "temporal_tls_server_ca": None}, "TEMPORAL_ADDRESS",
                 id="tls-to-a-server-without-tls"),
]  # fmt: skip


def _resolve(env: Env, proxy: TlsProxy, changes: dict[str, Any]) -> dict[str, Any]:
    names = {
        "stranger.cert": proxy.certs.stranger.cert,
        "stranger.key": proxy.certs.stranger.key,
        "dev-server": env.stack.temporal.address,
    }
    return {k: names.get(v, v) if isinstance(v, str) else v for k, v in changes.items()}


@pytest.mark.parametrize(("door", "changes", "variable"), WRONG)
async def test_wrong_credentials_are_one_line_naming_the_setting(
    env: Env, proxy: TlsProxy, door: str, changes: dict[str, Any], variable: str
) -> None:
    settings = env.settings.model_copy(update=through(proxy, door, **_resolve(env, proxy, changes)))
    started = time.monotonic()
    with pytest.raises(ConfigError) as info:
        await connect_temporal(settings)
    message = str(info.value)
    assert time.monotonic() - started < 10
    named, _, _ = message.partition(": ")
    assert variable in named.split(" or ") and "\n" not in message, message
    assert all(secret not in message for secret in SECRETS), message
    assert info.value.__cause__ is None and info.value.__suppress_context__


async def test_a_refused_api_key_stops_bootstrap_with_one_line_and_doctor_names_it_never_printing_the_key(
    env: Env, proxy: TlsProxy, tmp_path: Path
) -> None:
    cli = Cli(env.settings.model_copy(update=through(proxy, "api-key")), tmp_path, extra_secrets=SECRETS)
    wrong = {"TEMPORAL_API_KEY": WRONG_KEY}
    bootstrap, doctor = await asyncio.gather(cli("bootstrap", env=wrong), cli("doctor", "--json", env=wrong))
    line = bootstrap.error_line()
    assert line.startswith("error: TEMPORAL_API_KEY: ") and "refused" in line, line
    assert doctor.returncode == 1, doctor
    temporal = {c["name"]: c for c in doctor.json()}["temporal"]
    assert not temporal["ok"] and temporal["detail"] == line.removeprefix("error: "), temporal


async def test_a_worker_with_a_refused_certificate_exits_at_once_naming_the_setting(
    env: Env, proxy: TlsProxy, tmp_path: Path
) -> None:
    """Not retried like an unreachable server (the worker waits up to 60 s for one): no retry can fix it."""
    stranger = {"TEMPORAL_TLS_CERT": proxy.certs.stranger.cert, "TEMPORAL_TLS_KEY": proxy.certs.stranger.key}
    settings = env.settings.model_copy(update=through(proxy, "mtls"))
    started = time.monotonic()
    process = await start_xnovu(settings, "worker", "start", cwd=tmp_path, env=stranger)
    out, err = await process.communicate()
    text = out.decode() + err.decode()
    assert process.returncode == 1, text
    assert time.monotonic() - started < 20, text
    errors = [line for line in err.decode().splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: TEMPORAL_TLS_CERT: "), text
    assert "Traceback" not in text and all(secret not in text for secret in SECRETS)
