"""Logging: secrets masked everywhere a log line can carry them (I6); JSON lines with structured fields."""

from __future__ import annotations

import io
import itertools
import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from temporalio import activity
from temporalio.testing import ActivityEnvironment

from xnovu.logs import ConsoleFormatter, JsonFormatter, SecretMask, configure_logging

NOVU_KEY = "nv-secret-NEVER-LOGGED-7f3a"
DB_PASSWORD = "pg-password-NEVER-LOGGED-91c2"
_names = itertools.count()


class Capture:
    """A private logger whose handler masks `secrets` and formats with `formatter` into a buffer."""

    def __init__(self, secrets: list[str], formatter: logging.Formatter, logger: logging.Logger | None = None) -> None:
        self.stream = io.StringIO()
        self.handler = logging.StreamHandler(self.stream)
        self.handler.setFormatter(formatter)
        self.handler.addFilter(SecretMask(secrets))
        self.logger = logger or logging.getLogger(f"xnovu.test.logs{next(_names)}")
        self.logger.addHandler(self.handler)
        self.logger.setLevel(logging.DEBUG)
        self.propagate = self.logger.propagate
        self.logger.propagate = False

    def close(self) -> None:
        self.logger.removeHandler(self.handler)
        self.logger.propagate = self.propagate

    @property
    def text(self) -> str:
        return self.stream.getvalue()

    def lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.text.splitlines()]


@pytest.fixture
def json_log() -> Iterator[Capture]:
    c = Capture([NOVU_KEY, DB_PASSWORD], JsonFormatter())
    yield c
    c.close()


# -- SecretMask ----------------------------------------------------------------------------------------------


def test_secret_in_the_message_is_masked(json_log: Capture) -> None:
    json_log.logger.info(f"calling Novu with ApiKey {NOVU_KEY}")
    assert NOVU_KEY not in json_log.text
    assert json_log.lines()[0]["msg"] == "calling Novu with ApiKey ***"


def test_secret_in_format_arguments_is_masked(json_log: Capture) -> None:
    json_log.logger.warning("connecting to %s as %s", f"postgresql://app:{DB_PASSWORD}@db/app", "app")
    assert DB_PASSWORD not in json_log.text
    assert json_log.lines()[0]["msg"] == "connecting to postgresql://app:***@db/app as app"


def test_secret_in_an_extra_string_field_is_masked(json_log: Capture) -> None:
    json_log.logger.error("send failed", extra={"error": f"401 for key {NOVU_KEY}", "notification_id": 42})
    line = json_log.lines()[0]
    assert NOVU_KEY not in json_log.text
    assert line["error"] == "401 for key ***"
    assert line["notification_id"] == 42


def test_secret_in_exception_text_is_masked(json_log: Capture) -> None:
    try:
        raise ConnectionError(f"password authentication failed for {DB_PASSWORD}")
    except ConnectionError:
        json_log.logger.exception("database down")
    line = json_log.lines()[0]
    assert DB_PASSWORD not in json_log.text
    assert "ConnectionError: password authentication failed for ***" in line["exc"]
    assert "Traceback" in line["exc"]


def test_secret_in_exception_text_is_masked_in_console_format() -> None:
    c = Capture([NOVU_KEY], ConsoleFormatter())
    try:
        try:
            raise ValueError(f"bad key {NOVU_KEY}")
        except ValueError:
            c.logger.exception("failed with %s", NOVU_KEY, extra={"detail": NOVU_KEY})
    finally:
        c.close()
    assert NOVU_KEY not in c.text
    assert "ValueError: bad key ***" in c.text
    assert "failed with ***" in c.text
    assert "detail=***" in c.text


def test_longer_secret_is_masked_before_its_prefix() -> None:
    """A secret containing another must vanish whole, not leave its tail behind."""
    mask = SecretMask(["abcd1234", "abcd1234-and-more"])
    assert mask.mask("key=abcd1234-and-more") == "key=***"


def test_tiny_or_empty_secrets_are_not_masked() -> None:
    """Masking a 1 to 3 character value (or "") would shred every log line without protecting anything."""
    mask = SecretMask(["", "a", "xy", "pwd"])
    assert mask.secrets == []
    assert mask.mask("a happy xylophone pwd") == "a happy xylophone pwd"


def test_every_occurrence_is_masked() -> None:
    assert SecretMask([NOVU_KEY]).mask(f"{NOVU_KEY} and {NOVU_KEY}") == "*** and ***"


def test_without_secrets_the_record_is_left_alone() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "value %s", ("a",), None)
    assert SecretMask([]).filter(record) is True
    assert record.msg == "value %s"
    assert record.args == ("a",)


def test_filter_never_drops_a_record() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, f"has {NOVU_KEY}", None, None)
    assert SecretMask([NOVU_KEY]).filter(record) is True


def test_badly_formatted_log_call_does_not_raise_into_the_caller(json_log: Capture) -> None:
    raise_exceptions = logging.raiseExceptions
    logging.raiseExceptions = False  # what logging does in production: report, never raise
    try:
        json_log.logger.info("two values: %s %s", "only one")
    finally:
        logging.raiseExceptions = raise_exceptions


# -- JSON formatter ------------------------------------------------------------------------------------------


def test_json_line_has_ts_level_logger_msg(json_log: Capture) -> None:
    before = datetime.now(UTC).replace(microsecond=0)
    json_log.logger.info("worker started")
    line = json_log.lines()[0]
    assert line["level"] == "info"
    assert line["logger"] == json_log.logger.name
    assert line["msg"] == "worker started"
    ts = datetime.fromisoformat(line["ts"])
    assert ts.utcoffset() is not None and ts.utcoffset() == UTC.utcoffset(None)
    assert before <= ts <= datetime.now(UTC)


@pytest.mark.parametrize(
    ("method", "level"), [("debug", "debug"), ("info", "info"), ("warning", "warning"), ("error", "error")]
)
def test_json_level_is_lower_case(json_log: Capture, method: str, level: str) -> None:
    getattr(json_log.logger, method)("x")
    assert json_log.lines()[0]["level"] == level


def test_json_keeps_extra_fields_with_their_types(json_log: Capture) -> None:
    when = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
    json_log.logger.info(
        "claimed batch", extra={"kind": "new", "count": 3, "ratio": 0.5, "ok": True, "ids": [1, 2], "at": when}
    )
    line = json_log.lines()[0]
    assert line["kind"] == "new"
    assert line["count"] == 3
    assert line["ratio"] == 0.5
    assert line["ok"] is True
    assert line["ids"] == [1, 2]
    assert line["at"] == str(when)  # not JSON-native: rendered, not a crash


def test_json_omits_logging_internals(json_log: Capture) -> None:
    json_log.logger.info("x", extra={"notification_id": 1})
    assert set(json_log.lines()[0]) == {"ts", "level", "logger", "msg", "notification_id"}


def test_each_record_is_exactly_one_json_line(json_log: Capture) -> None:
    json_log.logger.info("first\nsecond line of the same message")
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        json_log.logger.exception("with a multi-line traceback")
    raw = json_log.text.splitlines()
    assert len(raw) == 2
    first, second = (json.loads(r) for r in raw)
    assert first["msg"] == "first\nsecond line of the same message"
    assert "RuntimeError: boom" in second["exc"]


def test_exception_without_mask_is_formatted_too() -> None:
    c = Capture([], JsonFormatter())
    try:
        try:
            raise KeyError("missing")
        except KeyError:
            c.logger.exception("lookup failed")
    finally:
        c.close()
    assert "KeyError: 'missing'" in c.lines()[0]["exc"]


# -- Temporal context ----------------------------------------------------------------------------------------


def test_temporal_activity_extra_is_flattened_to_correlation_fields(json_log: Capture) -> None:
    details = {
        "activity_id": "1",
        "activity_type": "trigger_notification_by_id",
        "attempt": 3,
        "namespace": "xnovu",
        "task_queue": "xnovu-notification-processing",
        "workflow_id": "notification-42-a1",
        "workflow_run_id": "run-1",
        "workflow_type": "NotificationTriggerWorkflow",
    }
    json_log.logger.info("sending", extra={"temporal_activity": details})
    line = json_log.lines()[0]
    assert line["workflow_id"] == "notification-42-a1"
    assert line["activity_type"] == "trigger_notification_by_id"
    assert line["attempt"] == 3
    assert "temporal_activity" not in line
    assert {"activity_id", "namespace", "task_queue", "workflow_run_id"}.isdisjoint(line)


def test_temporal_workflow_extra_is_flattened(json_log: Capture) -> None:
    details = {"workflow_id": "xnovu-poll-new", "workflow_type": "PollNotificationsWorkflow", "run_id": "r", "x": 1}
    json_log.logger.info("polled", extra={"temporal_workflow": details})
    line = json_log.lines()[0]
    assert line["workflow_id"] == "xnovu-poll-new"
    assert line["workflow_type"] == "PollNotificationsWorkflow"
    assert {"temporal_workflow", "run_id", "x"}.isdisjoint(line)


def test_real_temporal_activity_logger_lines_carry_correlation_fields() -> None:
    """What Temporal's own activity.logger attaches is what the JSON line shows (no server needed)."""
    adapter_logger = activity.logger.logger
    c = Capture([NOVU_KEY], JsonFormatter(), logger=adapter_logger)
    level = adapter_logger.level

    def work() -> activity.Info:
        activity.logger.info("activity says %s", NOVU_KEY)
        return activity.info()

    try:
        info = ActivityEnvironment().run(work)
    finally:
        c.close()
        adapter_logger.setLevel(level)
    line = c.lines()[0]
    assert line["workflow_id"] == info.workflow_id
    assert line["activity_type"] == info.activity_type
    assert line["attempt"] == info.attempt
    assert "temporal_activity" not in line
    assert NOVU_KEY not in c.text


# -- configure_logging ---------------------------------------------------------------------------------------


@pytest.fixture
def restore_root() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    on_message = activity.logger.activity_info_on_message
    yield
    root.handlers = handlers
    root.setLevel(level)
    activity.logger.activity_info_on_message = on_message


def test_configure_logging_installs_one_masked_json_handler(
    restore_root: None, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging("debug", "json", secrets=[NOVU_KEY])
    configure_logging("debug", "json", secrets=[NOVU_KEY])  # idempotent: still one xnovu handler
    root = logging.getLogger()
    assert [h.get_name() for h in root.handlers].count("xnovu") == 1
    assert root.level == logging.DEBUG
    logging.getLogger("xnovu.test.configured").info("key %s", NOVU_KEY, extra={"kind": "new"})
    err = capsys.readouterr().err
    assert NOVU_KEY not in err
    lines = [json.loads(x) for x in err.splitlines() if x.startswith("{")]
    assert {"msg": "key ***", "kind": "new"}.items() <= lines[-1].items()
