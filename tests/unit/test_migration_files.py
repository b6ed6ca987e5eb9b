"""The shipped migration files keep what `migrate` relies on to never hold up a live table (docs/design.md
"Migrations"); tests/integration/test_db_adoption.py measures it on a large table."""

from __future__ import annotations

import re

from xnovu.db.migrate import Migration, migrations

#: Statements that read a whole table: never in a transactional migration, where the locks the transaction took
#: before (ADD CONSTRAINT takes SHARE ROW EXCLUSIVE, CREATE INDEX itself SHARE) keep every insert waiting meanwhile.
_READS_THE_TABLE = re.compile(r"\bCREATE\s+(?:UNIQUE\s+)?INDEX\b|\bVALIDATE\s+CONSTRAINT\b", re.IGNORECASE)


def _code(sql: str) -> str:
    return "\n".join(line for line in sql.splitlines() if not line.lstrip().startswith("--"))


def test_no_transactional_migration_builds_an_index_or_validates_a_constraint() -> None:
    for m in migrations():
        if m.transactional:
            assert not _READS_THE_TABLE.search(_code(m.sql)), (
                f"{m.version}: build indexes (CONCURRENTLY) and validate constraints in a -- xnovu:no-transaction file"
            )


def test_every_index_of_a_no_transaction_migration_is_built_concurrently() -> None:
    for m in migrations():
        if not m.transactional:
            for statement in m.statements():
                if re.match(r"CREATE\s+(?:UNIQUE\s+)?INDEX\b", statement, re.IGNORECASE):
                    assert re.match(
                        r"CREATE\s+(?:UNIQUE\s+)?INDEX\s+CONCURRENTLY\s+IF\s+NOT\s+EXISTS\b", statement, re.IGNORECASE
                    ), f"{m.version}: {statement.splitlines()[0]}"


def test_the_rules_index_runs_right_after_the_rules_and_before_any_later_number() -> None:
    versions = [m.version for m in migrations()]
    assert versions == sorted(versions)
    assert versions.index("0006_rules_index") == versions.index("0006_rules") + 1
    # Files are applied in byte order of their names: the next number (e.g. 0007_wakeup_triggers) comes after.
    assert sorted(["0007_wakeup_triggers.sql", "0006_rules_index.sql", "0006_rules.sql"]) == [
        "0006_rules.sql",
        "0006_rules_index.sql",
        "0007_wakeup_triggers.sql",
    ]


def test_a_do_block_is_one_statement_of_a_no_transaction_file() -> None:
    sql = "-- xnovu:no-transaction\nSELECT 1;\nDO $$\nBEGIN\n  PERFORM 1;\n  PERFORM 2;\nEND $$;\nSELECT 2;\n"
    body = "DO $$\nBEGIN\n  PERFORM 1;\n  PERFORM 2;\nEND $$"
    assert Migration("x", sql).statements() == ["SELECT 1", body, "SELECT 2"]
