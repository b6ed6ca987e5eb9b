"""DATABASE_URL flags meant for xnovu never reach the server (README, Operations: transaction poolers)."""

from __future__ import annotations

import pytest

from xnovu.config import Settings
from xnovu.db.repository import server_url


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://u:p@h:6543/db?pgbouncer=true", "postgresql://u:p@h:6543/db"),
        ("postgresql://u:p@h:6543/db?pgbouncer=true&sslmode=require", "postgresql://u:p@h:6543/db?sslmode=require"),
        ("postgresql://u:p@h/db?sslmode=require&PgBouncer=TRUE", "postgresql://u:p@h/db?sslmode=require"),
        ("postgresql://u:p@h/db?application_name=a%20b&pgbouncer=1", "postgresql://u:p@h/db?application_name=a%20b"),
        ("postgresql://u:p@h/db?host=/tmp/sock", "postgresql://u:p@h/db?host=/tmp/sock"),
        ("postgresql://u:p@h/db", "postgresql://u:p@h/db"),
    ],
)
def test_the_pgbouncer_flag_is_stripped_and_every_other_parameter_kept(url: str, expected: str) -> None:
    assert server_url(url) == expected


def test_the_pgbouncer_flag_still_turns_the_statement_cache_off() -> None:
    s = Settings(_env_file=None, database_url="postgresql://u:p@h:5432/db?pgbouncer=true")  # type: ignore[call-arg]
    assert s.statement_cache_size == 0
