"""Settings (README "Configuration"): defaults, environment and `.env` reading, one-line errors without secrets,
derived values."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from xnovu.config import Settings, load_settings, redact_url
from xnovu.errors import ConfigError, XnovuError

DB_PASSWORD = "pg-password-NEVER-SHOWN-91c2"
NOVU_KEY = "nv-secret-NEVER-SHOWN-7f3a"
ENTERPRISE = "8c2f4b1e-0a6d-4c59-9d5e-3f1b2a7c6d90"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No variable of the developer's shell and no stray `.env` may leak into a test."""
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def config_error(**env: str) -> str:
    """The ConfigError message load_settings raises with these variables set."""
    mp = pytest.MonkeyPatch()
    try:
        for key, value in env.items():
            mp.setenv(key, value)
        with pytest.raises(ConfigError) as info:
            load_settings()
    finally:
        mp.undo()
    return str(info.value)


# -- defaults ------------------------------------------------------------------------------------------------


README_DEFAULTS: dict[str, Any] = {
    "temporal_address": "localhost:7233",
    "temporal_namespace": "xnovu",
    "temporal_task_queue": "xnovu-notification-processing",
    "temporal_max_concurrent_activities": 100,
    "temporal_max_concurrent_workflows": 50,
    "temporal_max_cached_workflows": 100,
    "temporal_namespace_retention_days": 7,
    "temporal_api_key": None,
    "temporal_tls_cert": None,
    "temporal_tls_key": None,
    "temporal_tls_server_ca": None,
    "poll_interval_ms": 10_000,
    "failed_poll_interval_ms": 60_000,
    "scheduled_poll_interval_ms": 30_000,
    "poll_batch_size": 100,
    "poll_enterprise_id": None,
    "worker_health_port": 3001,
    "worker_health_host": "0.0.0.0",
    "worker_log_level": "info",
    "worker_log_format": "console",
    "worker_pid_file": Path(".xnovu/worker.pid"),
    "novu_secret_key": None,
    "novu_api_url": "https://api.novu.co",
    "novu_rate_limit_rps": 60,
    "trigger_concurrency": 10,
    "max_attempts": 5,
    "retry_backoff_base_ms": 60_000,
    "retry_backoff_max_ms": 3_600_000,
    "processing_lease_ms": 900_000,
    "rules_sync_interval_ms": 60_000,
    "rules_catchup_window_ms": 300_000,
    "database_url": None,
    "database_statement_cache_size": None,
    "next_public_supabase_url": None,
    "next_public_supabase_anon_key": None,
    "supabase_service_role_key": None,
}


@pytest.mark.parametrize(("field", "expected"), README_DEFAULTS.items(), ids=list(README_DEFAULTS))
def test_default_matches_spec(field: str, expected: Any) -> None:
    assert getattr(load_settings(), field) == expected


def test_every_spec_variable_is_a_setting() -> None:
    """A variable README "Configuration" names but Settings lacks would be silently ignored (extra="ignore")."""
    assert set(README_DEFAULTS) <= set(Settings.model_fields)


# -- reading the environment ---------------------------------------------------------------------------------


ENV_CASES: list[tuple[str, str, str, Any]] = [
    ("TEMPORAL_ADDRESS", "temporal.internal:7234", "temporal_address", "temporal.internal:7234"),
    ("TEMPORAL_NAMESPACE", "prod", "temporal_namespace", "prod"),
    ("TEMPORAL_TASK_QUEUE", "tq-other", "temporal_task_queue", "tq-other"),
    ("TEMPORAL_MAX_CONCURRENT_ACTIVITIES", "7", "temporal_max_concurrent_activities", 7),
    ("TEMPORAL_MAX_CONCURRENT_WORKFLOWS", "8", "temporal_max_concurrent_workflows", 8),
    ("TEMPORAL_MAX_CACHED_WORKFLOWS", "9", "temporal_max_cached_workflows", 9),
    ("TEMPORAL_NAMESPACE_RETENTION_DAYS", "30", "temporal_namespace_retention_days", 30),
    ("TEMPORAL_TLS_CERT", "/certs/client.pem", "temporal_tls_cert", Path("/certs/client.pem")),
    ("TEMPORAL_TLS_KEY", "/certs/client.key", "temporal_tls_key", Path("/certs/client.key")),
    ("TEMPORAL_TLS_SERVER_CA", "/certs/ca.pem", "temporal_tls_server_ca", Path("/certs/ca.pem")),
    ("POLL_INTERVAL_MS", "2500", "poll_interval_ms", 2500),
    ("FAILED_POLL_INTERVAL_MS", "120000", "failed_poll_interval_ms", 120_000),
    ("SCHEDULED_POLL_INTERVAL_MS", "5000", "scheduled_poll_interval_ms", 5000),
    ("POLL_BATCH_SIZE", "250", "poll_batch_size", 250),
    ("POLL_ENTERPRISE_ID", ENTERPRISE.upper(), "poll_enterprise_id", ENTERPRISE),
    ("TRIGGER_CONCURRENCY", "3", "trigger_concurrency", 3),
    ("MAX_ATTEMPTS", "9", "max_attempts", 9),
    ("RETRY_BACKOFF_BASE_MS", "1000", "retry_backoff_base_ms", 1000),
    ("RETRY_BACKOFF_MAX_MS", "120000", "retry_backoff_max_ms", 120000),
    ("PROCESSING_LEASE_MS", "60000", "processing_lease_ms", 60_000),
    ("RULES_SYNC_INTERVAL_MS", "15000", "rules_sync_interval_ms", 15_000),
    ("RULES_CATCHUP_WINDOW_MS", "3600000", "rules_catchup_window_ms", 3_600_000),
    ("WORKER_HEALTH_HOST", "127.0.0.1", "worker_health_host", "127.0.0.1"),
    ("WORKER_HEALTH_PORT", "9100", "worker_health_port", 9100),
    ("WORKER_LOG_LEVEL", "debug", "worker_log_level", "debug"),
    ("WORKER_LOG_FORMAT", "json", "worker_log_format", "json"),
    ("WORKER_PID_FILE", "/run/xnovu.pid", "worker_pid_file", Path("/run/xnovu.pid")),
    ("NOVU_API_URL", "https://eu.api.novu.co/", "novu_api_url", "https://eu.api.novu.co"),
    ("NOVU_RATE_LIMIT_RPS", "2.5", "novu_rate_limit_rps", 2.5),
    ("NOVU_TIMEOUT_MS", "3000", "novu_timeout_ms", 3000),
    ("DATABASE_STATEMENT_CACHE_SIZE", "0", "database_statement_cache_size", 0),
    ("NEXT_PUBLIC_SUPABASE_URL", "https://abc.supabase.co", "next_public_supabase_url", "https://abc.supabase.co"),
]


@pytest.mark.parametrize(("var", "raw", "field", "expected"), ENV_CASES, ids=[c[0] for c in ENV_CASES])
def test_environment_variable_is_read(
    monkeypatch: pytest.MonkeyPatch, var: str, raw: str, field: str, expected: Any
) -> None:
    monkeypatch.setenv(var, raw)
    assert getattr(load_settings(), field) == expected


@pytest.mark.parametrize(
    ("var", "field"),
    [
        ("NOVU_SECRET_KEY", "novu_secret_key"),
        ("DATABASE_URL", "database_url"),
        ("TEMPORAL_API_KEY", "temporal_api_key"),
        ("NEXT_PUBLIC_SUPABASE_ANON_KEY", "next_public_supabase_anon_key"),
        ("SUPABASE_SERVICE_ROLE_KEY", "supabase_service_role_key"),
    ],
)
def test_secret_variables_are_read_and_hidden_from_repr(monkeypatch: pytest.MonkeyPatch, var: str, field: str) -> None:
    value = f"postgresql://app:{DB_PASSWORD}@db:5432/app" if var == "DATABASE_URL" else NOVU_KEY
    monkeypatch.setenv(var, value)
    settings = load_settings()
    assert getattr(settings, field).get_secret_value() == value
    secret = DB_PASSWORD if var == "DATABASE_URL" else NOVU_KEY
    assert secret not in repr(settings)
    assert secret not in str(settings)


@pytest.mark.parametrize("blank", ["", "   "])
@pytest.mark.parametrize("var", ["NOVU_SECRET_KEY", "DATABASE_URL", "TEMPORAL_API_KEY", "POLL_ENTERPRISE_ID"])
def test_blank_optional_variable_means_unset(monkeypatch: pytest.MonkeyPatch, var: str, blank: str) -> None:
    monkeypatch.setenv(var, blank)
    assert getattr(load_settings(), var.lower()) is None


@pytest.mark.parametrize("var", ["TEMPORAL_TLS_CERT", "TEMPORAL_TLS_KEY", "TEMPORAL_TLS_SERVER_CA"])
def test_blank_tls_path_means_unset(monkeypatch: pytest.MonkeyPatch, var: str) -> None:
    monkeypatch.setenv(var, "")
    assert getattr(load_settings(), var.lower()) is None


def test_dotenv_in_working_directory_is_read(clean_env: Path) -> None:
    (clean_env / ".env").write_text(
        "# local development\n"
        "POLL_BATCH_SIZE=7\n"
        f"NOVU_SECRET_KEY={NOVU_KEY}\n"
        "TEMPORAL_NAMESPACE=from-dotenv\n"
        "SOME_OTHER_APP_VARIABLE=ignored\n",
        encoding="utf-8",
    )
    settings = load_settings()
    assert settings.poll_batch_size == 7
    assert settings.temporal_namespace == "from-dotenv"
    assert settings.novu_secret_key is not None
    assert settings.novu_secret_key.get_secret_value() == NOVU_KEY


def test_blank_secret_in_dotenv_means_unset(clean_env: Path) -> None:
    (clean_env / ".env").write_text("NOVU_SECRET_KEY=\nDATABASE_URL=\n", encoding="utf-8")
    settings = load_settings()
    assert settings.novu_secret_key is None
    assert settings.database_url is None


def test_environment_wins_over_dotenv(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (clean_env / ".env").write_text("POLL_BATCH_SIZE=7\n", encoding="utf-8")
    monkeypatch.setenv("POLL_BATCH_SIZE", "9")
    assert load_settings().poll_batch_size == 9


def test_bad_value_in_dotenv_is_a_config_error(clean_env: Path) -> None:
    (clean_env / ".env").write_text("POLL_BATCH_SIZE=lots\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"^POLL_BATCH_SIZE: "):
        load_settings()


def test_settings_without_env_file_ignore_dotenv(clean_env: Path) -> None:
    (clean_env / ".env").write_text("POLL_BATCH_SIZE=7\n", encoding="utf-8")
    assert Settings(_env_file=None).poll_batch_size == 100  # type: ignore[call-arg]


# -- bad values ----------------------------------------------------------------------------------------------


BAD_VALUES: list[tuple[str, str]] = [
    ("POLL_BATCH_SIZE", "0"),
    ("POLL_BATCH_SIZE", "abc"),
    ("POLL_BATCH_SIZE", "1000000"),
    ("POLL_INTERVAL_MS", "-1000"),
    ("FAILED_POLL_INTERVAL_MS", "-1"),
    ("SCHEDULED_POLL_INTERVAL_MS", "0"),
    ("POLL_INTERVAL_MS", "10s"),
    ("TEMPORAL_ADDRESS", "nohost"),
    ("TEMPORAL_ADDRESS", "localhost:"),
    ("TEMPORAL_ADDRESS", "localhost:99999"),
    ("NOVU_API_URL", "ftp://x"),
    ("NOVU_API_URL", "api.novu.co"),
    ("DATABASE_URL", "mysql://app@db/app"),
    ("POLL_ENTERPRISE_ID", "not-a-uuid"),
    ("WORKER_LOG_FORMAT", "xml"),
    ("WORKER_LOG_LEVEL", "loud"),
    ("WORKER_HEALTH_PORT", "70000"),
    ("MAX_ATTEMPTS", "0"),
    ("TRIGGER_CONCURRENCY", "-2"),
    ("RETRY_BACKOFF_BASE_MS", "-1"),
    ("PROCESSING_LEASE_MS", "5"),
    ("NOVU_RATE_LIMIT_RPS", "0"),
    ("TEMPORAL_NAMESPACE", ""),
    ("DATABASE_STATEMENT_CACHE_SIZE", "-1"),
    ("RULES_SYNC_INTERVAL_MS", "0"),
    ("RULES_CATCHUP_WINDOW_MS", "1000"),
]


@pytest.mark.parametrize(("var", "raw"), BAD_VALUES, ids=[f"{v}={r}" for v, r in BAD_VALUES])
def test_bad_value_is_one_line_naming_the_variable(var: str, raw: str) -> None:
    message = config_error(**{var: raw})
    assert message.startswith(f"{var}: ")
    assert "\n" not in message
    assert "Settings" not in message  # not pydantic's multi-line dump


def test_config_error_is_an_xnovu_error() -> None:
    with pytest.raises(XnovuError):
        load_settings(poll_batch_size=0)


def test_non_secret_bad_value_is_quoted_to_help_the_user() -> None:
    assert "'nohost'" in config_error(TEMPORAL_ADDRESS="nohost")


def test_database_url_password_never_appears_in_the_error() -> None:
    message = config_error(DATABASE_URL=f"mysql://app:{DB_PASSWORD}@db.example.com:3306/app")
    assert message.startswith("DATABASE_URL: ")
    assert DB_PASSWORD not in message
    assert "db.example.com" not in message  # the secret-bearing value is not echoed at all


@pytest.mark.parametrize("field", ["novu_secret_key", "temporal_api_key", "supabase_service_role_key"])
def test_secret_value_never_appears_in_the_error(field: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(**{field: [NOVU_KEY]})  # not a string: a validation error carrying the secret as input
    message = str(info.value)
    assert message.startswith(f"{field.upper()}: ")
    assert NOVU_KEY not in message


def test_config_error_does_not_chain_the_validation_error() -> None:
    """A traceback must not print pydantic's error, whose `input_value` would show the secret (I6)."""
    with pytest.raises(ConfigError) as info:
        load_settings(database_url=f"mysql://app:{DB_PASSWORD}@db/app")
    assert info.value.__cause__ is None
    assert info.value.__suppress_context__ is True


@pytest.mark.parametrize("port", ["notaport", "99999"])
def test_database_url_with_bad_port_is_a_config_error_at_start_up(port: str) -> None:
    message = config_error(DATABASE_URL=f"postgresql://app:{DB_PASSWORD}@db.example.com:{port}/app")
    assert message.startswith("DATABASE_URL: ")
    assert DB_PASSWORD not in message


# -- derived values ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ms", "seconds"),
    [(1, 1), (999, 1), (1000, 1), (1001, 2), (1500, 2), (10_000, 10), (60_000, 60), (86_400_000, 86_400)],
)
def test_interval_seconds_rounds_up_with_one_second_minimum(ms: int, seconds: int) -> None:
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None, poll_interval_ms=ms, failed_poll_interval_ms=ms, scheduled_poll_interval_ms=ms
    )
    assert [settings.interval_seconds(k) for k in ("new", "failed", "scheduled")] == [seconds] * 3


def test_interval_seconds_uses_the_variable_of_each_kind() -> None:
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None, poll_interval_ms=2000, failed_poll_interval_ms=3000, scheduled_poll_interval_ms=4000
    )
    assert settings.interval_seconds("new") == 2
    assert settings.interval_seconds("failed") == 3
    assert settings.interval_seconds("scheduled") == 4


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (f"postgresql://postgres.abcd:{DB_PASSWORD}@aws-0-eu-central-1.pooler.supabase.com:6543/postgres", 0),
        (f"postgres://app:{DB_PASSWORD}@10.0.0.5:6543/app", 0),
        (f"postgresql://app:{DB_PASSWORD}@db.internal:5432/app?pgbouncer=true", 0),
        (f"postgresql://app:{DB_PASSWORD}@db.internal:6432/app?sslmode=require&pgbouncer=true", 0),
        (f"postgresql://postgres:{DB_PASSWORD}@db.abcd.supabase.co:5432/postgres", 100),
        (f"postgresql://postgres.abcd:{DB_PASSWORD}@aws-0-eu-central-1.pooler.supabase.com:5432/postgres", 100),
        ("postgresql://app@localhost/app", 100),
    ],
)
def test_statement_cache_is_off_behind_a_transaction_pooler(url: str, expected: int) -> None:
    assert Settings(_env_file=None, database_url=url).statement_cache_size == expected  # type: ignore[call-arg]


def test_statement_cache_default_without_database_url() -> None:
    assert Settings(_env_file=None).statement_cache_size == 100  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("port", "override", "expected"),
    [("6543", "250", 250), ("5432", "0", 0), ("5432", "17", 17)],
)
def test_statement_cache_size_variable_overrides_detection(
    monkeypatch: pytest.MonkeyPatch, port: str, override: str, expected: int
) -> None:
    monkeypatch.setenv("DATABASE_URL", f"postgresql://app:{DB_PASSWORD}@db:{port}/app")
    monkeypatch.setenv("DATABASE_STATEMENT_CACHE_SIZE", override)
    assert load_settings().statement_cache_size == expected


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (f"postgresql://app:{DB_PASSWORD}@db:5432/app", "postgresql://app:***@db:5432/app"),
        (f"postgres://app:{DB_PASSWORD}@db/app?sslmode=require", "postgres://app:***@db/app?sslmode=require"),
        ("postgresql://app:p%40ss%3Aw0rd@db:5432/app", "postgresql://app:***@db:5432/app"),
        (f"postgresql://:{DB_PASSWORD}@db/app", "postgresql://:***@db/app"),
    ],
)
def test_redact_url_removes_the_password(url: str, expected: str) -> None:
    redacted = redact_url(url)
    assert redacted == expected
    assert DB_PASSWORD not in redacted


@pytest.mark.parametrize("url", ["postgresql://app@db:5432/app", "postgresql://db/app", "postgresql:///app"])
def test_redact_url_leaves_a_url_without_password_alone(url: str) -> None:
    assert redact_url(url) == url


def test_backoff_base_above_max_is_rejected_with_both_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RETRY_BACKOFF_BASE_MS", "5000")
    monkeypatch.setenv("RETRY_BACKOFF_MAX_MS", "1000")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert "RETRY_BACKOFF_BASE_MS" in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize(("raw", "expected"), [("INFO", "info"), (" Debug ", "debug")])
def test_log_level_is_case_insensitive(monkeypatch: pytest.MonkeyPatch, raw: str, expected: str) -> None:
    monkeypatch.setenv("WORKER_LOG_LEVEL", raw)
    assert load_settings().worker_log_level == expected


def test_a_novu_request_longer_than_the_lease_is_refused_naming_both_variables(clean_env: Path) -> None:
    message = config_error(NOVU_TIMEOUT_MS="20000", PROCESSING_LEASE_MS="10000")
    assert "NOVU_TIMEOUT_MS" in message and "PROCESSING_LEASE_MS" in message and "\n" not in message


def test_a_ten_second_lease_works_with_the_default_novu_timeout(clean_env: Path) -> None:
    assert load_settings(processing_lease_ms=10_000).processing_lease_ms == 10_000


def test_every_secret_setting_is_in_the_one_list_the_logs_mask() -> None:
    """Settings.secret_values() is the only list of secrets (the CLI's log filter uses it): every SecretStr field
    is in it, and so is the password inside DATABASE_URL on its own."""
    from pydantic import SecretStr

    from xnovu.config import SECRET_FIELDS, Settings

    secret_typed = {name for name, f in Settings.model_fields.items() if "SecretStr" in str(f.annotation)}
    assert secret_typed == set(SECRET_FIELDS)
    s = Settings(
        _env_file=None,  # type: ignore[call-arg]
        novu_secret_key="nv-key-1234",
        temporal_api_key="tmp-key-5678",
        database_url="postgresql://u:db-pass-9012@h:5432/d",
        next_public_supabase_anon_key="anon-3456",
        supabase_service_role_key="role-7890",
    )
    values = s.secret_values()
    assert {"nv-key-1234", "tmp-key-5678", "anon-3456", "role-7890", "db-pass-9012"} <= set(values)
    assert all(isinstance(getattr(s, name), SecretStr) for name in SECRET_FIELDS)


def test_fair_share_weights_parse_and_a_bad_value_is_one_line_naming_the_setting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ent = "aaaaaaaa-0000-4000-8000-000000000001"
    monkeypatch.setenv("FAIR_SHARE_WEIGHTS", f"{ent}=3,none=0.5")
    assert load_settings().fair_share_weight_map == {ent: 3.0, "none": 0.5}
    monkeypatch.delenv("FAIR_SHARE_WEIGHTS")
    assert load_settings().fair_share_weight_map == {}
    message = config_error(FAIR_SHARE_WEIGHTS=f"{ent}=heavy")
    assert message.startswith("FAIR_SHARE_WEIGHTS: ") and "not a number" in message and "\n" not in message
