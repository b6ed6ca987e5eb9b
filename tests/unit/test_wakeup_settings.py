"""Wake-up settings: defaults, one-line errors, when wake-ups are off, and the pooler hint kept off the wire."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from xnovu.config import Settings, load_settings
from xnovu.db.repository import database_url
from xnovu.errors import ConfigError
from xnovu.worker.wakeup import off_reason

DB_PASSWORD = "pg-password-NEVER-SHOWN-91c2"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No variable of the developer's shell and no stray `.env` may leak into a test."""
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)
    monkeypatch.chdir(tmp_path)


def settings(**values: object) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def test_wakeups_are_on_by_default_with_a_half_second_debounce_and_a_two_second_linger() -> None:
    s = load_settings()
    assert s.wakeup_enabled is True and s.wakeup_debounce_ms == 500
    assert s.wakeup_linger_ms == 2_000, "a drained new-rows poll stays open 2 s for wake signals while commits trickle"


@pytest.mark.parametrize(("raw", "expected"), [("false", False), ("0", False), ("TRUE", True), ("yes", True)])
def test_wakeup_enabled_reads_the_usual_booleans(monkeypatch: pytest.MonkeyPatch, raw: str, expected: bool) -> None:
    monkeypatch.setenv("WAKEUP_ENABLED", raw)
    assert load_settings().wakeup_enabled is expected


@pytest.mark.parametrize(
    ("var", "raw"),
    [
        ("WAKEUP_ENABLED", "sometimes"),
        ("WAKEUP_DEBOUNCE_MS", "-1"),
        ("WAKEUP_DEBOUNCE_MS", "600000"),
        ("WAKEUP_DEBOUNCE_MS", "fast"),
        ("WAKEUP_LINGER_MS", "-1"),
        ("WAKEUP_LINGER_MS", "61000"),
    ],
)
def test_a_bad_wakeup_value_is_one_line_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, var: str, raw: str
) -> None:
    monkeypatch.setenv(var, raw)
    with pytest.raises(ConfigError) as info:
        load_settings()
    message = str(info.value)
    assert message.startswith(f"{var}: ") and "\n" not in message and repr(raw) in message


@pytest.mark.parametrize(
    "url",
    [
        f"postgresql://postgres.abcd:{DB_PASSWORD}@aws-0-eu-central-1.pooler.supabase.com:6543/postgres",
        f"postgresql://app:{DB_PASSWORD}@db.internal:6432/app?sslmode=require&pgbouncer=true",
        f"postgresql://app:{DB_PASSWORD}@db.internal:5432/app?PgBouncer=TRUE",
    ],
)
def test_behind_a_transaction_pooler_wakeups_are_off_and_say_why(url: str) -> None:
    s = settings(database_url=url)
    assert s.transaction_pooler
    reason = off_reason(s)
    assert reason is not None and "transaction pooler" in reason and DB_PASSWORD not in reason


@pytest.mark.parametrize(
    "url",
    [
        f"postgresql://postgres:{DB_PASSWORD}@db.abcd.supabase.co:5432/postgres",
        f"postgresql://postgres.abcd:{DB_PASSWORD}@aws-0-eu-central-1.pooler.supabase.com:5432/postgres",
    ],
)
def test_a_direct_or_session_mode_connection_can_listen(url: str) -> None:
    assert off_reason(settings(database_url=url)) is None


def test_a_statement_cache_of_zero_alone_does_not_switch_wakeups_off() -> None:
    """DATABASE_STATEMENT_CACHE_SIZE=0 is also chosen for other reasons; only the URL says "transaction pooler"."""
    s = settings(database_url="postgresql://app@db:5432/app", database_statement_cache_size=0)
    assert s.statement_cache_size == 0 and off_reason(s) is None


def test_wakeup_enabled_false_switches_them_off() -> None:
    assert off_reason(settings(wakeup_enabled=False)) == "WAKEUP_ENABLED is false"


def test_the_pgbouncer_hint_is_not_sent_to_the_server_and_the_rest_of_the_url_is_kept() -> None:
    url = f"postgresql://app:{DB_PASSWORD}@db.internal:6432/app?sslmode=require&pgbouncer=true&application_name=x"
    connect_to = urlsplit(database_url(settings(database_url=url)))
    assert parse_qs(connect_to.query) == {"sslmode": ["require"], "application_name": ["x"]}
    assert connect_to.password == DB_PASSWORD and connect_to.port == 6432 and connect_to.path == "/app"


def test_a_url_without_the_hint_is_used_unchanged() -> None:
    url = f"postgresql://app:{DB_PASSWORD}@db.internal:5432/app?sslmode=require"
    assert database_url(settings(database_url=url)) == url


def test_two_commits_within_the_linger_window_are_a_trickle_and_one_is_not() -> None:
    from xnovu.core.arrivals import Arrivals

    now = [100.0]
    arrivals = Arrivals(clock=lambda: now[0])
    assert not arrivals.trickling(2.0), "nothing heard"
    arrivals.heard()
    assert not arrivals.trickling(2.0), "one commit alone (a commit a minute): its run closes at once"
    now[0] += 1.0
    arrivals.heard()
    assert arrivals.trickling(2.0), "two commits a second apart"
    now[0] += 1.5
    assert not arrivals.trickling(2.0), "the older of the two is 2.5 s old: the trickle stopped"
    now[0] += 60.0
    arrivals.heard()
    assert not arrivals.trickling(2.0), "a commit a minute after the last one"


def test_the_linger_window_covers_the_fold_and_stays_within_the_poll_interval() -> None:
    """attack18 findings 3 and 4: a window shorter than the fold closes before the folded commit's signal (a timer
    for nothing), one longer than the poll interval holds the safety-net ticks back."""
    from xnovu.core.arrivals import SIGNAL_MARGIN_MS, linger_window_s

    assert linger_window_s(0, 500, 10_000) == 0.0
    assert linger_window_s(2_000, 500, 10_000) == 2.0
    assert linger_window_s(2_000, 2_500, 10_000) == (2_500 + SIGNAL_MARGIN_MS) / 1000
    assert linger_window_s(60_000, 500, 10_000) == 10.0
    assert linger_window_s(2_000, 500, 1_000) == 1.0
    assert linger_window_s(2_000, 900, 1_000) == 0.0  # the fold does not fit in the interval: no linger
