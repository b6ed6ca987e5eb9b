"""Every advisory lock key xnovu takes has one purpose, and is listed where operators look for it.

The list heads xnovu/db/queries.sql and is repeated in docs/design.md ("Advisory locks"). Claims once shared the
`migrate` run lock's key, which stopped delivery for the whole migration (tests/integration/test_migrate_and_claims.py).
"""

from __future__ import annotations

import re
from importlib.resources import files
from pathlib import Path

from xnovu.db.queries import queries

_CALL = re.compile(r"pg_(?:try_)?advisory\w*\((\d+)\)")
_LISTED = re.compile(r"^--\s+advisory-key (\d+)", re.MULTILINE)
DESIGN = Path(__file__).resolve().parents[2] / "docs" / "design.md"


def _keys_by_query() -> dict[str, int]:
    out: dict[str, int] = {}
    for name, sql in queries().items():
        found = {int(k) for k in _CALL.findall(sql)}
        assert len(found) <= 1, f"{name} takes more than one advisory key"
        if found:
            out[name] = found.pop()
    return out


def test_each_purpose_has_its_own_key() -> None:
    keys = _keys_by_query()
    purposes = {
        "migration transaction": {keys["migrations_lock"]},
        "claims": {keys["claim_lock"]},
        "migrate run": {
            keys["migrations_run_try_lock"],
            keys["migrations_session_try_lock"],
            keys["migrations_session_unlock"],
        },
    }
    assert all(len(k) == 1 for k in purposes.values()), "one purpose, one key"
    flat = [next(iter(k)) for k in purposes.values()]
    assert len(set(flat)) == len(flat), f"two purposes share an advisory key: {purposes}"
    assert set(keys.values()) == set(flat), "an advisory key outside the documented purposes"


def test_every_key_is_listed_in_queries_sql_and_design_md() -> None:
    used = set(_keys_by_query().values())
    text = files("xnovu.db").joinpath("queries.sql").read_text(encoding="utf-8")
    assert {int(k) for k in _LISTED.findall(text)} == used
    design = DESIGN.read_text(encoding="utf-8")
    for key in used:
        assert f"`{key}`" in design, f"advisory key {key} missing from docs/design.md"
