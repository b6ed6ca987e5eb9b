"""xnovu: durable notification delivery from a Postgres outbox to Novu, on Temporal.

Public API (README "Python API"), imported lazily so that Temporal's workflow sandbox, which re-imports the package,
does not pull in the database driver, the HTTP stack or the worker:

    from xnovu import NotificationClient, WorkerManager, load_settings, trigger_notification_by_id
    from xnovu import NotificationProcessor  # the trigger core without Temporal (was xnovu.core.processor)
"""

from __future__ import annotations

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

try:
    __version__ = version("xnovu")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

_EXPORTS = {
    "NotificationClient": "xnovu.api",
    "trigger_notification_by_id": "xnovu.api",
    "trigger_notifications_by_ids": "xnovu.api",
    "Settings": "xnovu.config",
    "load_settings": "xnovu.config",
    "XnovuError": "xnovu.errors",
    "NotificationProcessor": "xnovu.service.processor",
    "Outcome": "xnovu.core.models",
    "TriggerResult": "xnovu.core.models",
    "WorkerManager": "xnovu.worker.manager",
}

if TYPE_CHECKING:
    from xnovu.api import NotificationClient as NotificationClient
    from xnovu.api import trigger_notification_by_id as trigger_notification_by_id
    from xnovu.api import trigger_notifications_by_ids as trigger_notifications_by_ids
    from xnovu.config import Settings as Settings
    from xnovu.config import load_settings as load_settings
    from xnovu.core.models import Outcome as Outcome
    from xnovu.core.models import TriggerResult as TriggerResult
    from xnovu.errors import XnovuError as XnovuError
    from xnovu.service.processor import NotificationProcessor as NotificationProcessor
    from xnovu.worker.manager import WorkerManager as WorkerManager


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'xnovu' has no attribute {name!r}")


__all__ = [*sorted(_EXPORTS), "__version__"]
