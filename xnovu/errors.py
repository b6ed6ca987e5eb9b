"""Exceptions a user of xnovu can catch.

    XnovuError                     root: every error xnovu raises on purpose
    ├── ConfigError                a setting is missing or invalid (names the variable)
    ├── DatabaseError              Postgres unreachable, schema missing, migration failed
    ├── TemporalUnavailableError   the Temporal server cannot be reached or the namespace is missing
    ├── NotificationNotFoundError  no notification with that id
    └── NovuConfigurationError     Novu rejected the API key (401/403/402): every send would fail alike

Messages are one readable sentence that says what to do; none contains a secret (I6).
"""

from __future__ import annotations


class XnovuError(Exception):
    """Root of xnovu's own errors."""


class ConfigError(XnovuError):
    """A setting is missing or has a bad value."""


class DatabaseError(XnovuError):
    """Postgres could not be used."""


class TemporalUnavailableError(XnovuError):
    """Temporal could not be reached."""


class NotificationNotFoundError(XnovuError):
    """No notification has that id."""


class NovuConfigurationError(XnovuError):
    """Novu refuses the key or the account: retrying row after row would only burn attempts."""
