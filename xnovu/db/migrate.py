"""Plain-SQL migrations shipped in the package, applied in order and recorded in `notify.xnovu_schema_migrations`.

Built to run against a live database (README, Operations: "What `xnovu db migrate` does on a live database"):

- Each file only creates what is missing, so running on an existing Supabase schema (or twice) changes no user data;
  added columns have constant defaults, which Postgres stores in the catalogue without rewriting the table.
- A migration runs in one transaction under a short `lock_timeout`: DDL that has to wait for a lock (behind a long
  application transaction) gives up quickly and is retried, instead of making every later insert queue behind it.
- A file whose first line is `-- xnovu:no-transaction` runs outside a transaction, one statement at a time
  (statements end with `;` at the end of a line): that is where `CREATE INDEX CONCURRENTLY` lives, which builds an
  index while the table keeps taking writes. An index an interrupted build left INVALID is dropped and rebuilt.
- Concurrent `migrate` runs (several replicas starting at once) are serialised by an advisory lock whose key no
  claim uses (the key table heads queries.sql; docs/design.md "Advisory locks"), so delivery goes on. Behind a
  transaction pooler such as pgbouncer a session-level lock cannot be held across statements (each transaction may
  run on another server connection), so `Repository.migrate` holds it in a transaction on a second connection for
  the whole run; on a single direct connection it is a session-level lock. Each statement is idempotent besides, and
  an index some other session is still building is waited for, never dropped.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from dataclasses import dataclass
from importlib.resources import files

import asyncpg

from xnovu.db.queries import q
from xnovu.errors import DatabaseError

log = logging.getLogger(__name__)

#: First line of a migration that must run outside a transaction (CREATE/DROP INDEX CONCURRENTLY).
NO_TRANSACTION = "-- xnovu:no-transaction"

#: How long one DDL statement may wait for a table lock before it gives up and the migration is retried. Inserts
#: that arrive meanwhile queue behind the waiting DDL, so this bounds their wait too.
LOCK_TIMEOUT = "250ms"

#: How long migrate keeps retrying a migration that cannot get its locks before it says which one and why.
LOCK_PATIENCE_S = 600.0

#: How often a `migrate` run waiting for another one tries the run lock again.
RUN_LOCK_POLL_S = 0.2

#: A concurrent index build reads the whole table; the pool's per-statement timeout must not cancel it half way.
INDEX_BUILD_TIMEOUT_S = 24 * 3600.0

_CREATE_INDEX = re.compile(
    r"CREATE\s+(?:UNIQUE\s+)?INDEX\s+CONCURRENTLY\s+IF\s+NOT\s+EXISTS\s+(\w+)\s+ON\s+(?:ONLY\s+)?(\w+)\.",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Migration:
    """One shipped migration file."""

    version: str
    sql: str

    @property
    def transactional(self) -> bool:
        return not self.sql.lstrip().startswith(NO_TRANSACTION)

    def statements(self) -> list[str]:
        """The statements of a no-transaction file: comment lines dropped, each ending with `;` at a line end.

        A `;` at a line end inside a `$$ … $$` body (a DO block) does not end the statement.
        """
        out: list[str] = []
        current: list[str] = []
        in_body = False
        for line in self.sql.splitlines():
            if not line.strip() or line.lstrip().startswith("--"):
                continue
            current.append(line)
            if line.count("$$") % 2:
                in_body = not in_body
            if not in_body and line.rstrip().endswith(";"):
                out.append("\n".join(current).strip().removesuffix(";"))
                current = []
        if current:
            out.append("\n".join(current).strip())
        return out


def migrations() -> list[Migration]:
    """Every shipped migration, in order."""
    folder = files("xnovu.db").joinpath("migrations")
    names = sorted(p.name for p in folder.iterdir() if p.name.endswith(".sql"))
    return [Migration(n.removesuffix(".sql"), folder.joinpath(n).read_text(encoding="utf-8")) for n in names]


def migration_files() -> list[tuple[str, str]]:
    """(version, sql) of every shipped migration, in order."""
    return [(m.version, m.sql) for m in migrations()]


async def migrate(
    conn: asyncpg.Connection,
    lock_conn: asyncpg.Connection | None = None,
    *,
    lock_timeout: str = LOCK_TIMEOUT,
    patience_s: float = LOCK_PATIENCE_S,
) -> list[str]:
    """Apply every migration not yet recorded; returns the versions this run applied.

    Concurrent runs are serialised by an advisory lock: held by a transaction on `lock_conn` when given (works
    through a transaction pooler), else at session level on `conn` (a direct connection). `conn` must not be inside
    a transaction: no-transaction migrations need autocommit.
    """
    if lock_conn is not None:
        while True:
            holder = lock_conn.transaction()
            await holder.start()
            if await lock_conn.fetchval(q("migrations_run_try_lock")):
                await lock_conn.execute(q("migrations_close_portal"))
                break
            await holder.rollback()  # ends this transaction, so an index build of the running migrate never waits on it
            await asyncio.sleep(RUN_LOCK_POLL_S)
        try:
            return await _migrate(conn, lock_timeout, patience_s)
        finally:
            await holder.commit()
    while not await conn.fetchval(q("migrations_session_try_lock")):
        await asyncio.sleep(RUN_LOCK_POLL_S)
    try:
        return await _migrate(conn, lock_timeout, patience_s)
    finally:
        await conn.execute(q("migrations_session_unlock"))


async def _migrate(conn: asyncpg.Connection, lock_timeout: str, patience_s: float) -> list[str]:
    async with conn.transaction():
        await conn.execute(q("migrations_lock"))
        await conn.execute("CREATE SCHEMA IF NOT EXISTS notify")
        await conn.execute(q("migrations_table"))
    applied_now: list[str] = []
    for migration in migrations():
        if migration.version in await _applied(conn):
            continue
        log.info("applying migration", extra={"version": migration.version})
        if migration.transactional:
            done = await _apply_in_transaction(conn, migration, lock_timeout, time.monotonic() + patience_s)
        else:
            for statement in migration.statements():
                await _run_outside_transaction(conn, migration.version, statement)
            async with conn.transaction():
                await conn.execute(q("migrations_lock"))
                done = await conn.execute(q("migrations_record"), migration.version) == "INSERT 0 1"
        if done:
            applied_now.append(migration.version)
    return applied_now


async def _applied(conn: asyncpg.Connection) -> set[str]:
    return {r["version"] for r in await conn.fetch(q("migrations_applied"))}


async def _apply_in_transaction(
    conn: asyncpg.Connection, migration: Migration, lock_timeout: str, deadline: float
) -> bool:
    """Run one migration in a transaction, retrying while it cannot get its locks quickly; False if another run did."""
    delay = 0.1
    while True:
        try:
            async with conn.transaction():
                # Waiting for another migrate run's transaction is fine (it is short and blocks no insert): take the
                # advisory lock before the lock timeout applies.
                await conn.execute(q("migrations_lock"))
                if migration.version in await _applied(conn):
                    return False
                await conn.execute(q("migrations_lock_timeout"), lock_timeout)
                await conn.execute(migration.sql)
                await conn.execute(q("migrations_record"), migration.version)
            return True
        except asyncpg.LockNotAvailableError:
            if time.monotonic() > deadline:
                raise DatabaseError(
                    f"migration {migration.version} could not lock its tables within {LOCK_PATIENCE_S:.0f} s: "
                    "a long-running transaction holds them; end it and run `xnovu db migrate` again"
                ) from None
            log.info("migration waits for a table lock; retrying", extra={"version": migration.version})
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)


async def _run_outside_transaction(conn: asyncpg.Connection, version: str, statement: str) -> None:
    """One statement of a no-transaction migration; a concurrent index build ends with a valid index."""
    match = _CREATE_INDEX.match(statement)
    if match is None:
        await conn.execute(statement, timeout=INDEX_BUILD_TIMEOUT_S)
        return
    name, schema = match.group(1), match.group(2)
    failures = 0
    deadline = time.monotonic() + INDEX_BUILD_TIMEOUT_S
    while time.monotonic() < deadline:
        state = await conn.fetchrow(q("migrations_index_state"), schema, name)
        if state is not None and state["valid"]:
            return
        if state is not None and state["building"]:
            await asyncio.sleep(1.0)  # another migrate run is building it: wait for its outcome
            continue
        if state is not None:
            log.warning("rebuilding an index left invalid by an interrupted build", extra={"index": name})
            await conn.execute(await conn.fetchval(q("migrations_drop_invalid_index"), schema, name))
        try:
            await conn.execute(statement, timeout=INDEX_BUILD_TIMEOUT_S)
        except (asyncpg.UniqueViolationError, asyncpg.DuplicateTableError, asyncpg.DeadlockDetectedError) as exc:
            # A concurrent run created the same name at the same instant, or the build itself failed: look again.
            failures += 1
            if failures >= 3:
                raise DatabaseError(
                    f"migration {version}: building index {schema}.{name} failed: {type(exc).__name__}: {exc}"
                ) from None
    raise DatabaseError(
        f"migration {version}: index {schema}.{name} was not built within {INDEX_BUILD_TIMEOUT_S:.0f} s"
    )
