"""Postgres access: migrations, the named queries and the typed repository."""

from xnovu.db.migrate import migrate
from xnovu.db.repository import Repository, connect

__all__ = ["Repository", "connect", "migrate"]
