"""Plain-SQL migrations shipped in the package, applied in order and recorded in `notify.xnovu_schema_migrations`.

Each file only creates what is missing, so running on an existing Supabase schema (or twice) changes no user data.
An advisory lock serialises concurrent `migrate` runs (e.g. several replicas starting at once).
"""

from __future__ import annotations

import logging
from importlib.resources import files

import asyncpg

from xnovu.db.queries import q

log = logging.getLogger(__name__)


def migration_files() -> list[tuple[str, str]]:
    """(version, sql) of every shipped migration, in order."""
    folder = files("xnovu.db").joinpath("migrations")
    names = sorted(p.name for p in folder.iterdir() if p.name.endswith(".sql"))
    return [(name.removesuffix(".sql"), folder.joinpath(name).read_text(encoding="utf-8")) for name in names]


async def migrate(conn: asyncpg.Connection) -> list[str]:
    """Apply every migration not yet recorded; returns the versions applied now."""
    applied_now: list[str] = []
    async with conn.transaction():
        await conn.execute(q("migrations_lock"))
        await conn.execute("CREATE SCHEMA IF NOT EXISTS notify")
        await conn.execute(q("migrations_table"))
        done = {r["version"] for r in await conn.fetch(q("migrations_applied"))}
        for version, sql in migration_files():
            if version in done:
                continue
            log.info("applying migration", extra={"version": version})
            await conn.execute(sql)
            await conn.execute(q("migrations_record"), version)
            applied_now.append(version)
    return applied_now
