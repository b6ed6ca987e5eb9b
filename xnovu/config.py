"""Settings: every knob of README "Configuration", read once from the environment (and `.env`) at the entry point.

The object is built once by the CLI (or by a user embedding xnovu) and passed down; nothing else reads
`os.environ`. A bad value raises :class:`~xnovu.errors.ConfigError` with one line naming the variable.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from xnovu.errors import ConfigError

#: Where `xnovu dev`, the tests and the benchmark keep their embedded state.
DEFAULT_STATE_DIR = Path(".xnovu")


class Settings(BaseSettings):
    """All configuration. Field names map to upper-case environment variables of the same name."""

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore", frozen=True)

    # Temporal
    temporal_address: str = "localhost:7233"
    temporal_namespace: str = Field("xnovu", min_length=1, max_length=200)
    temporal_task_queue: str = Field("xnovu-notification-processing", min_length=1, max_length=200)
    temporal_max_concurrent_activities: int = Field(100, ge=1, le=10_000)
    temporal_max_concurrent_workflows: int = Field(50, ge=1, le=10_000)
    temporal_max_cached_workflows: int = Field(100, ge=0, le=100_000)
    temporal_api_key: SecretStr | None = None
    temporal_tls_cert: Path | None = None
    temporal_tls_key: Path | None = None
    #: The CA (PEM file) that signed the server's certificate, for a cluster or proxy whose certificate no system root
    #: signed; setting it turns TLS on. Temporal Cloud's certificates need none.
    temporal_tls_server_ca: Path | None = None
    temporal_namespace_retention_days: int = Field(7, ge=1, le=3650)

    # Polling
    poll_interval_ms: int = Field(10_000, ge=1, le=86_400_000)
    failed_poll_interval_ms: int = Field(60_000, ge=1, le=86_400_000)
    scheduled_poll_interval_ms: int = Field(30_000, ge=1, le=86_400_000)
    poll_batch_size: int = Field(100, ge=1, le=1000)
    poll_enterprise_id: str | None = None
    #: Fair-share weights of enterprises within an urgency level (docs/priority.md "Claims"): "uuid=3,uuid=1", an
    #: enterprise not named weighs 1, "none=W" weighs the rows without an enterprise. Empty: every one equal.
    fair_share_weights: str = ""
    #: `priority` (urgency first, fair share across enterprises, docs/priority.md) or `oldest-first`: due rows in due
    #: order in one window and Novu tokens first come first served, the order before priority; a comparison mode
    #: (`xnovu bench`'s noisy-neighbour phase, docs/performance.md), not meant for production.
    send_order: Literal["priority", "oldest-first"] = "priority"

    # Rules (README "Rules"): the xnovu-rules-sync interval and how late a missed fire may still be made up.
    rules_sync_interval_ms: int = Field(60_000, ge=1, le=86_400_000)
    rules_catchup_window_ms: int = Field(300_000, ge=10_000, le=7 * 86_400_000)
    # Wake-ups: a commit that makes rows PENDING triggers the poll schedule at once (README "Wake-ups")
    wakeup_enabled: bool = True
    wakeup_debounce_ms: int = Field(500, ge=0, le=60_000)
    # How long a new-rows poll run that drained stays open for wake signals while commits keep coming (a trickle),
    # instead of a Schedule run per commit; 0: never (docs/performance.md "Cost at any arrival rate").
    wakeup_linger_ms: int = Field(2_000, ge=0, le=60_000)

    # Retention (docs/retention.md): xnovu's own records (delivery ledger, rule fires, spent budget rows) of a
    # notification that ended (SENT, RETRACTED, FAILED and dead-lettered) more than RETENTION_DAYS ago are pruned by
    # the `xnovu-retention` Schedule and `xnovu db prune`. The notifications themselves only when asked:
    # RETENTION_NOTIFICATION_DAYS set (the Schedule then deletes those older than it), or `xnovu db prune
    # --notifications`.
    retention_days: int = Field(30, ge=1, le=36_500)
    retention_notification_days: int | None = Field(None, ge=1, le=36_500)

    # Processing
    trigger_concurrency: int = Field(10, ge=1, le=1000)
    max_attempts: int = Field(5, ge=1, le=100)
    retry_backoff_base_ms: int = Field(60_000, ge=0, le=86_400_000)
    retry_backoff_max_ms: int = Field(3_600_000, ge=0, le=7 * 86_400_000)
    processing_lease_ms: int = Field(900_000, ge=1_000, le=7 * 86_400_000)

    # Worker
    worker_health_host: str = "0.0.0.0"
    worker_health_port: int = Field(3001, ge=0, le=65535)
    worker_log_level: Literal["debug", "info", "warning", "error"] = "info"
    worker_log_format: Literal["console", "json"] = "console"
    worker_pid_file: Path = DEFAULT_STATE_DIR / "worker.pid"

    # Novu
    novu_secret_key: SecretStr | None = None
    novu_api_url: str = "https://api.novu.co"
    novu_rate_limit_rps: float = Field(60.0, gt=0, le=1_000_000)
    novu_timeout_ms: int = Field(10_000, ge=100, le=120_000)
    #: How long to let Novu settle before asking its activity feed about a request whose outcome is unknown (no
    #: answer, a cut connection, 502/503/504): docs/novu-contract.md "Unknown outcomes" justifies the default.
    novu_outcome_settle_ms: int = Field(2_000, ge=0, le=60_000)

    # Database
    database_url: SecretStr | None = None
    database_statement_cache_size: int | None = Field(None, ge=0, le=10_000)
    database_pool_size: int = Field(10, ge=1, le=500)

    # Accepted for compatibility with the Supabase seed; direct Postgres access does not need them.
    next_public_supabase_url: str | None = None
    next_public_supabase_anon_key: SecretStr | None = None
    supabase_service_role_key: SecretStr | None = None

    @field_validator(
        "poll_enterprise_id",
        "novu_secret_key",
        "database_url",
        "temporal_api_key",
        "temporal_tls_cert",
        "temporal_tls_key",
        "temporal_tls_server_ca",
        "database_statement_cache_size",
        "retention_notification_days",
        mode="before",
    )
    @classmethod
    def _blank_is_unset(cls, value: Any) -> Any:
        """An empty variable in `.env` means "not set", as users expect from `KEY=`."""
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @field_validator("worker_log_level", "worker_log_format", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        """INFO and info mean the same to people writing `.env` files."""
        return value.strip().lower() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _combinations(self) -> Settings:
        """Refuse settings that each look fine but cannot work together (one line naming them)."""
        if self.retry_backoff_base_ms > self.retry_backoff_max_ms:
            raise ValueError("RETRY_BACKOFF_BASE_MS must not exceed RETRY_BACKOFF_MAX_MS")
        if self.novu_timeout_ms > self.processing_lease_ms:
            raise ValueError(
                f"NOVU_TIMEOUT_MS ({self.novu_timeout_ms}) must not exceed PROCESSING_LEASE_MS "
                f"({self.processing_lease_ms}): one Novu request must fit in the lease that fences it"
            )
        if self.retention_days * 86_400_000 < self.rules_catchup_window_ms:
            raise ValueError(
                f"RETENTION_DAYS ({self.retention_days}) must cover RULES_CATCHUP_WINDOW_MS "
                f"({self.rules_catchup_window_ms}): a rule fire made up that late needs the record of its time"
            )
        if self.retention_notification_days is not None and self.retention_notification_days < self.retention_days:
            raise ValueError(
                f"RETENTION_NOTIFICATION_DAYS ({self.retention_notification_days}) must not be less than "
                f"RETENTION_DAYS ({self.retention_days}): a notification's ledger is pruned before the notification"
            )
        return self

    @field_validator("temporal_task_queue")
    @classmethod
    def _not_a_poll_queue(cls, value: str) -> str:
        """The polls run on TEMPORAL_TASK_QUEUE + "-polls" (xnovu/temporal/options.py), and a poll started on a
        queue of that name sends its children to the name without it: a main queue named so would lose them."""
        if value.endswith("-polls"):
            raise ValueError("must not end in '-polls' (xnovu names the polls' own queue so); choose another name")
        return value

    @field_validator("fair_share_weights")
    @classmethod
    def _weights(cls, value: str) -> str:
        from xnovu.core.weights import parse_weights

        parse_weights(value)  # a ValueError names what is wrong
        return value

    @property
    def fair_share_weight_map(self) -> dict[str, float]:
        """FAIR_SHARE_WEIGHTS parsed (xnovu/core/weights.py: enterprise id or "none" → weight)."""
        from xnovu.core.weights import parse_weights

        return parse_weights(self.fair_share_weights)

    @field_validator("poll_enterprise_id")
    @classmethod
    def _uuid_scope(cls, value: str | None) -> str | None:
        if value is None:
            return None
        import uuid

        try:
            return str(uuid.UUID(value))
        except ValueError as exc:
            raise ValueError("must be a UUID") from exc

    @field_validator("novu_secret_key", "temporal_api_key", "database_url", mode="before")
    @classmethod
    def _clean_secret(cls, value: Any) -> Any:
        """Secrets mounted from files often end in a newline; anything else unprintable is a mistake."""
        if isinstance(value, str):
            value = value.strip()
            if _has_control_or_space(value):
                raise ValueError("must not contain spaces or control characters")
        return value

    @field_validator("novu_api_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        value = value.strip()
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc or _has_control_or_space(value):
            raise ValueError("must be an http(s) URL such as https://api.novu.co")
        _check_port(value)
        return value.rstrip("/")

    @field_validator("temporal_address")
    @classmethod
    def _host_port(cls, value: str) -> str:
        value = value.strip()
        if _has_control_or_space(value):
            raise ValueError("must be host:port without spaces, e.g. localhost:7233")
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError("must be host:port, e.g. localhost:7233")
        return value

    @field_validator("database_url")
    @classmethod
    def _postgres_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        parts = urlsplit(value.get_secret_value())
        if parts.scheme not in ("postgres", "postgresql"):
            raise ValueError("must be a postgresql:// URL")
        _check_port(value.get_secret_value())
        return value

    def secret_values(self) -> list[str]:
        """Every configured secret value, for the log filter that masks them (I6; xnovu/logs.py `SecretMask`).

        The one list of what logs must never show: each secret setting (SECRET_FIELDS) and, on its own, the password
        inside DATABASE_URL (a driver message may quote it without the rest of the URL).
        """
        values = [v.get_secret_value() for name in SECRET_FIELDS if (v := getattr(self, name)) is not None]
        if self.database_url is not None:
            password = urlsplit(self.database_url.get_secret_value()).password
            if password:
                values.append(password)
        return values

    def to_environ(self, **overrides: Any) -> dict[str, str]:
        """These settings as the environment variables that rebuild them in a child `xnovu` process.

        Secrets are included (a child needs them); never log the result. `overrides` win; None removes one.
        """
        out: dict[str, str] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            out[name.upper()] = ("true" if value else "false") if isinstance(value, bool) else str(value)
        for key, value in overrides.items():
            if value is None:
                out.pop(key.upper(), None)
            else:
                out[key.upper()] = str(value)
        return out

    # -- derived values -------------------------------------------------------------------------------------

    @property
    def statement_cache_size(self) -> int:
        """asyncpg's prepared-statement cache; 0 behind a transaction pooler (Supabase port 6543, pgbouncer)."""
        if self.database_statement_cache_size is not None:
            return self.database_statement_cache_size
        return 0 if self.transaction_pooler else 100

    @property
    def transaction_pooler(self) -> bool:
        """DATABASE_URL goes through a transaction pooler (port 6543 as Supabase's, or `pgbouncer=true`).

        Such a pooler hands each transaction to any server connection: prepared statements and LISTEN do not
        survive it, so the statement cache and wake-ups are off behind one.
        """
        if self.database_url is None:
            return False
        url = self.database_url.get_secret_value()
        parts = urlsplit(url)
        try:
            port = parts.port
        except ValueError:
            port = None
        return port == 6543 or "pgbouncer=true" in parts.query.lower()

    def interval_seconds(self, kind: str) -> int:
        """Schedule interval for a poll kind (or "rules-sync"), rounded up to whole seconds, at least 1 s."""
        ms = {
            "new": self.poll_interval_ms,
            "failed": self.failed_poll_interval_ms,
            "scheduled": self.scheduled_poll_interval_ms,
            "rules-sync": self.rules_sync_interval_ms,
        }[kind]
        return max(1, math.ceil(ms / 1000))


def _check_port(url: str) -> None:
    """A URL's port, when it has one, must be 1 to 65535 (checked at start-up, not at the first request)."""
    try:
        port = urlsplit(url).port
    except ValueError:
        port = -1
    if port is not None and not 0 < port < 65536:
        raise ValueError("has an invalid port")


def _has_control_or_space(text: str) -> bool:
    return any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in text)


def redact_url(url: str) -> str:
    """The URL with its password replaced by `***` (for logs and messages)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


def load_settings(**overrides: Any) -> Settings:
    """Build settings from the environment and `.env`; one readable line naming the variable on error."""
    return _load(Settings, overrides)


class EmulatorSettings(BaseSettings):
    """What `xnovu emulator` reads, and nothing else: a worker setting that is empty or invalid (NOVU_API_URL=, a
    bad POLL_INTERVAL_MS) is none of its business and must not stop it."""

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore", frozen=True)

    novu_secret_key: SecretStr | None = None
    worker_log_level: Literal["debug", "info", "warning", "error"] = "info"
    worker_log_format: Literal["console", "json"] = "console"

    @field_validator("novu_secret_key", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("worker_log_level", "worker_log_format", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("novu_secret_key", mode="before")
    @classmethod
    def _clean_secret(cls, value: Any) -> Any:
        return Settings._clean_secret(value)

    def secret_values(self) -> list[str]:
        """The key the emulator accepts, masked in its logs like the worker's (I6)."""
        return [self.novu_secret_key.get_secret_value()] if self.novu_secret_key is not None else []


def load_emulator_settings(**overrides: Any) -> EmulatorSettings:
    """The emulator's few settings from the environment and `.env` (see EmulatorSettings)."""
    return _load(EmulatorSettings, overrides)


_S = TypeVar("_S", bound=BaseSettings)


def _load(cls: type[_S], overrides: dict[str, Any]) -> _S:
    """Build `cls` from the environment and `.env`; one readable line naming the variable on error."""
    try:
        return cls(**overrides)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else "settings"
        if field == "settings" or not first["loc"]:
            msg = str(first["msg"]).removeprefix("Value error, ")
            raise ConfigError(f"{msg}; fix it in the environment or .env") from None
        value = first.get("input")
        shown = "" if field in SECRET_FIELDS or isinstance(value, dict) else f" (got {_short(value)})"
        msg = str(first["msg"]).removeprefix("Value error, ")
        raise ConfigError(f"{field.upper()}: {msg}{shown}; fix it in the environment or .env") from None


def _short(value: Any, limit: int = 80) -> str:
    """A bad value as shown in the one-line error: repr'd (control characters visible) and cut to `limit`."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


#: The settings whose values are secrets: never shown in a configuration error, masked in every log line (I6).
SECRET_FIELDS = (
    "novu_secret_key",
    "database_url",
    "temporal_api_key",
    "next_public_supabase_anon_key",
    "supabase_service_role_key",
)
