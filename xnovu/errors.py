"""Exceptions a user of xnovu can catch.

    XnovuError                     root: every error xnovu raises on purpose
    ├── ConfigError                a setting is missing or invalid (names the variable)
    ├── DatabaseError              Postgres unreachable, schema missing, migration failed
    ├── TemporalUnavailableError   the Temporal server cannot be reached or the namespace is missing
    ├── NotificationNotFoundError  no notification with that id
    └── NovuConfigurationError     Novu refused the key (401/403) or the plan limit is reached (402): every send
                                   would fail alike

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


#: The HTTP statuses with which Novu refuses every send alike (401/403 the key, 402 the plan limit): each holds the
#: attempt as a NovuConfigurationError instead of failing a row (xnovu/novu/client.py), and each has its alert.
NOVU_CONFIG_STATUSES = (401, 402, 403)


class NovuConfigurationError(XnovuError):
    """Novu refuses the key or the account: retrying row after row would only burn attempts."""
