"""One CLIENT span per SQL statement when tracing is on: the pool's connections run their queries inside a span.

xnovu makes these spans itself rather than through opentelemetry-instrumentation-asyncpg, whose exact pins on
OpenTelemetry releases the pip bundled with Python 3.11 cannot resolve (xnovu/tracing.py). A span is named for the
statement's block in queries.sql (`claim_rows`, `finalize`, …), or for its first keyword (`BEGIN`, `COMMIT`) when the
SQL is not one of them; it carries the SQL text with its `$n` placeholders, never a parameter value.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import unquote, urlsplit

import asyncpg

from xnovu.db.queries import name_of
from xnovu.tracing import Tracing

_COMMENTS = re.compile(r"\A(?:\s+|--[^\n]*(?:\n|\Z)|/\*.*?\*/)*", re.DOTALL)


def statement_name(sql: str) -> str:
    """The span name of a statement: its queries.sql block, else its first keyword after any comments."""
    named = name_of(sql)
    if named is not None:
        return named
    words = _COMMENTS.sub("", sql, count=1).split(None, 1)
    return words[0].rstrip(";").upper() if words else "SQL"


def server_attributes(url: str) -> dict[str, Any]:
    """Database name and TCP address of DATABASE_URL, as span attributes (never the user or the password)."""
    parts = urlsplit(url)
    attributes: dict[str, Any] = {"db.system.name": "postgresql"}
    database = unquote(parts.path.lstrip("/"))
    if database:
        attributes["db.namespace"] = database
    if parts.hostname:  # empty for a Unix socket given as ?host=/path
        attributes["server.address"] = parts.hostname
        attributes["server.port"] = parts.port or 5432
    return attributes


def traced_connection_class(tracing: Tracing, url: str) -> type[asyncpg.Connection]:
    """An asyncpg connection class for `asyncpg.create_pool(connection_class=…)` whose query methods are spans.

    The pool's own `fetch`/`execute`/… and a transaction's BEGIN/COMMIT go through these methods too.
    """
    base = server_attributes(url)

    def span(sql: str) -> Any:
        name = statement_name(sql)
        return tracing.client_span(name, {**base, "db.query.summary": name, "db.query.text": sql})

    class TracedConnection(asyncpg.Connection):  # type: ignore[misc]
        async def execute(self, query: str, *args: Any, **kwargs: Any) -> Any:
            with span(query):
                return await super().execute(query, *args, **kwargs)

        async def executemany(self, command: str, args: Any, **kwargs: Any) -> Any:
            with span(command):
                return await super().executemany(command, args, **kwargs)

        async def fetch(self, query: str, *args: Any, **kwargs: Any) -> Any:
            with span(query):
                return await super().fetch(query, *args, **kwargs)

        async def fetchrow(self, query: str, *args: Any, **kwargs: Any) -> Any:
            with span(query):
                return await super().fetchrow(query, *args, **kwargs)

        async def fetchval(self, query: str, *args: Any, **kwargs: Any) -> Any:
            with span(query):
                return await super().fetchval(query, *args, **kwargs)

    return TracedConnection
