"""Which database errors are outages (retry until healed) rather than problems of one row."""

from __future__ import annotations

import asyncio

import asyncpg

#: SQLSTATE classes of outages: connection exception, insufficient resources, operator intervention,
#: transaction rollback (serialization failure, deadlock).
_TRANSIENT_CLASSES = ("08", "53", "57", "40")


def is_transient_db_error(exc: BaseException) -> bool:
    """True when the database is unreachable or temporarily refusing work, not when a statement is wrong."""
    if isinstance(exc, OSError | asyncio.TimeoutError | asyncpg.InterfaceError):
        return True
    if isinstance(exc, asyncpg.PostgresError):
        state = getattr(exc, "sqlstate", None) or ""
        return state[:2] in _TRANSIENT_CLASSES
    return False
