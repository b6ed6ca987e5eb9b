"""Loads `queries.sql` once: every SQL statement of xnovu, by name."""

from __future__ import annotations

import re
from functools import cache
from importlib.resources import files

_NAME = re.compile(r"^--\s*name:\s*(\w+)\s*$", re.MULTILINE)


@cache
def queries() -> dict[str, str]:
    """Name → SQL text of every block in `queries.sql`."""
    text = files("xnovu.db").joinpath("queries.sql").read_text(encoding="utf-8")
    parts = _NAME.split(text)
    return {name: body.strip() for name, body in zip(parts[1::2], parts[2::2], strict=True)}


def q(name: str) -> str:
    """The SQL of one named block (KeyError names the missing block)."""
    return queries()[name]


@cache
def _names() -> dict[str, str]:
    return {sql: name for name, sql in queries().items()}


def name_of(sql: str) -> str | None:
    """The block name of SQL text that came from `q()` (None for any other statement): what traces call it."""
    return _names().get(sql)
