"""Bad-input corpus: malformed or hostile rows, settings and command-line arguments, each with its expected outcome.

Part A puts one hostile row into a batch with three good rows and runs `NotificationProcessor.process_many` on the
per-test Postgres and the HTTP emulator (no Temporal). Whatever the row holds, the batch does not crash, the good rows
are SENT, the emulator sees no duplicate delivery and the hostile row ends in the state its table entry names:
SENT intact (the input is fine for Novu), dead-lettered with a readable `error_details.error` (I5), or REJECTED
without a Novu call (I1). Part B feeds hostile settings to `load_settings` and to the CLI in-process, points valid
settings at closed ports, and passes bad command-line arguments.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from typer.testing import CliRunner

from tests.support import DB_PASSWORD, NOVU_SECRET, Env, Stack, environment, processor_for
from xnovu.cli import app
from xnovu.config import Settings, load_settings
from xnovu.core.models import Outcome
from xnovu.db.repository import connect
from xnovu.devtools.stack import free_port
from xnovu.errors import ConfigError, DatabaseError, NovuConfigurationError, TemporalUnavailableError, XnovuError
from xnovu.service.processor import NotificationProcessor
from xnovu.temporal.connection import connect_temporal
from xnovu.worker.composition import build_processor, novu_client

SECRETS = (NOVU_SECRET, DB_PASSWORD)
GOOD_ROWS = 3
GOOD_RECIPIENTS = 2


@pytest.fixture(scope="module")
async def shared_env(stack: Stack) -> AsyncIterator[Env]:
    """One database for the whole corpus (each case makes its own rows): a fresh database per case costs seconds."""
    async with environment(stack) as e:
        yield e


@pytest.fixture
def env(shared_env: Env) -> Env:
    """The module's database with a fresh emulator (deliveries, counters, config) for each test."""
    shared_env.emulator.emulator.reset(config=True)
    return shared_env


@pytest.fixture(scope="module")
async def processor(shared_env: Env) -> AsyncIterator[NotificationProcessor]:
    async with processor_for(shared_env) as processor:
        yield processor


# =====================================================================================================================
# A. Hostile rows
# =====================================================================================================================

Make = Callable[[Env, int], Awaitable[int]]
"""Puts the hostile row in place (given the id of the good rows' workflow) and returns the id to process."""


async def insert_row(
    env: Env,
    workflow_id: int,
    *,
    name: str = "hostile",
    payload: str = '{"ok": true}',
    recipients: list[str | None] | None = None,
    overrides: str | None = None,
    publish_status: str = "PUBLISH",
    deactivated: bool = False,
    status: str = "PENDING",
    retraction_reason: str | None = None,
    scheduled_for: str | None = None,
) -> int:
    """One notification row exactly as given: `payload`/`overrides` are raw JSON text ('null' is JSON null)."""
    value = await env.repo.pool.fetchval(
        """
        INSERT INTO notify.ent_notification (name, publish_status, deactivated, notification_workflow_id,
          notification_status, payload, recipients, overrides, retraction_reason, scheduled_for)
        VALUES ($1, $2::text::shared_types.publish_status, $3, $4, $5::text::shared_types.notification_status,
          $6::text::jsonb, $7::text[]::uuid[], $8::text::jsonb, $9, $10::text::timestamptz)
        RETURNING id
        """,
        name,
        publish_status,
        deactivated,
        workflow_id,
        status,
        payload,
        [str(uuid.uuid4())] if recipients is None else recipients,
        overrides,
        retraction_reason,
        scheduled_for,
    )
    return int(value)


def as_json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def row(*, payload: Any = None, overrides: Any = None, **columns: Any) -> Make:
    """A hostile row on the good rows' workflow; Python payload/overrides are JSON-encoded, str is raw JSON."""

    async def make(env: Env, workflow_id: int) -> int:
        extra = dict(columns)
        if payload is not None:
            extra["payload"] = payload if isinstance(payload, str) else as_json(payload)
        if overrides is not None:
            extra["overrides"] = overrides if isinstance(overrides, str) else as_json(overrides)
        return await insert_row(env, workflow_id, **extra)

    return make


def on_workflow(key: str) -> Make:
    """A plain row on a workflow whose key is `key` (created, published)."""

    async def make(env: Env, _: int) -> int:
        return await insert_row(env, await env.workflow(key))

    return make


def recipients(ids: list[str | None]) -> Make:
    return row(recipients=ids)


def many_recipients(n: int) -> Make:
    return row(recipients=[str(uuid.uuid4()) for _ in range(n)])


def duplicated_recipients() -> Make:
    a, b = str(uuid.uuid4()), str(uuid.uuid4())
    return row(recipients=[a, a, b, a, b])


def no_such_id(notification_id: int) -> Make:
    async def make(env: Env, _: int) -> int:
        return notification_id

    return make


async def dangling_workflow(env: Env, workflow_id: int) -> int:
    """A row whose workflow id points nowhere (possible on Supabase copies without the foreign key)."""
    nid = await insert_row(env, workflow_id)
    await env.execute(
        "ALTER TABLE notify.ent_notification DROP CONSTRAINT ent_notification_notification_workflow_id_fkey"
    )
    await env.execute("UPDATE notify.ent_notification SET notification_workflow_id = 987654321 WHERE id = $1", nid)
    return nid


SQL_DROP = "'; DROP TABLE notify.ent_notification; --"
CONTROL = "tab\t nl\n cr\r bell\x07 esc\x1b[31m del\x7f ls\u2028 ps\u2029 bom\ufeff zwj\u200d rlo\u202e end"
UNICODE = {
    "greeting": "héllo wörld ✓ 你好 مرحبا שלום",
    "emoji": "🎉👍🏽👨‍👩‍👧‍👦🏳️‍🌈",
    "math": "\U0001d518\U0001d52b\U0001d526\U0001d520",
}
NESTED_100: Any = "bottom"
for _ in range(100):
    NESTED_100 = {"d": NESTED_100}
LONG_KEY = "k" * 500 + "-" + "w" * 499  # 1 000 characters


@dataclass(frozen=True)
class RowCase:
    id: str
    make: Make
    outcome: Outcome
    reason: str | None = None
    """Part of `result.reason` (and of `error_details.error` when dead-lettered)."""
    requests: int = 0
    """HTTP requests the hostile row costs at the emulator (0: no Novu call)."""
    recipients: int = 0
    """Distinct recipients delivered for it (SENT)."""
    payload: Any = None
    """The payload every delivery must carry, byte-identical (SENT; None: the row's own payload)."""
    overrides: Any = None
    workflow: str | None = None
    """The workflow name the deliveries must carry (SENT)."""
    known_workflows: tuple[str, ...] | None = None
    """Emulator configured with these known workflows (others: 422 workflow_not_found)."""
    bug: str | None = None


def sent(case_id: str, make: Make, *, recipients: int = 1, requests: int | None = None, **kw: Any) -> RowCase:
    return RowCase(
        case_id, make, Outcome.SENT, recipients=recipients, requests=recipients if requests is None else requests, **kw
    )


def dead(case_id: str, make: Make, reason: str, **kw: Any) -> RowCase:
    return RowCase(case_id, make, Outcome.DEAD_LETTERED, reason, **kw)


def rejected(case_id: str, make: Make, reason: str, **kw: Any) -> RowCase:
    return RowCase(case_id, make, Outcome.REJECTED, reason, **kw)


ROW_CASES: list[RowCase] = [
    # -- fine for Novu: sent, byte-identical ------------------------------------------------------------------------
    sent("payload-unicode-emoji", row(payload=UNICODE), payload=UNICODE),
    sent(
        "payload-control-chars",
        row(payload={"s": CONTROL, CONTROL: "key too"}),
        payload={"s": CONTROL, CONTROL: "key too"},
    ),
    sent(
        "payload-sql-strings",
        row(payload={"q": SQL_DROP, "r": "1' OR '1'='1", "s": "$1; SELECT pg_sleep(10); --", "t": "\\x00"}),
        payload={"q": SQL_DROP, "r": "1' OR '1'='1", "s": "$1; SELECT pg_sleep(10); --", "t": "\\x00"},
    ),
    sent(
        "payload-odd-keys",
        row(payload={"": "empty key", "a.b": 1, "$where": "1", "__proto__": {"x": 1}, "k\ney": None, SQL_DROP: []}),
        payload={"": "empty key", "a.b": 1, "$where": "1", "__proto__": {"x": 1}, "k\ney": None, SQL_DROP: []},
    ),
    sent("payload-empty-object", row(payload="{}"), payload={}),
    sent("payload-nested-100-deep", row(payload=NESTED_100), payload=NESTED_100),
    sent(
        "payload-400KB-multibyte-under-limit",
        row(payload={"blob": "é" * 200_000}),
        payload={"blob": "é" * 200_000},
    ),
    sent("name-sql-injection", row(name="Robert'); DROP TABLE notify.ent_notification_workflow;--")),
    sent("name-unicode-control-chars", row(name=f"通知 🔔 {CONTROL}")),
    sent("name-empty", row(name="")),
    sent(
        "overrides-hostile-strings",
        row(overrides={"email": {"subject": SQL_DROP + CONTROL}, "🔔": UNICODE}),
        overrides={"email": {"subject": SQL_DROP + CONTROL}, "🔔": UNICODE},
    ),
    sent("overrides-json-null", row(overrides="null")),
    sent("recipient-nil-uuid", recipients(["00000000-0000-0000-0000-000000000000"])),
    sent("recipients-duplicated", duplicated_recipients(), recipients=2),
    sent("recipients-100-one-bulk", many_recipients(100), recipients=100, requests=1),
    sent("recipients-250-two-bulks-and-50-singles", many_recipients(250), recipients=250, requests=52),
    sent("workflow-key-spaces", on_workflow("my  workflow key "), workflow="my  workflow key "),
    sent("workflow-key-unicode", on_workflow("通知-🔔-wörkflow"), workflow="通知-🔔-wörkflow"),
    sent("workflow-key-slashes-query", on_workflow("../../v1/admin?x=1#frag"), workflow="../../v1/admin?x=1#frag"),
    sent("workflow-key-newline-tab", on_workflow("wel\ncome\tkey"), workflow="wel\ncome\tkey"),
    sent("workflow-key-1000-chars", on_workflow(LONG_KEY), workflow=LONG_KEY),
    sent("workflow-key-sql", on_workflow(SQL_DROP), workflow=SQL_DROP),
    sent(
        "scheduled-minus-infinity-is-due",
        row(scheduled_for="-infinity"),
    ),
    # -- can never be sent as it is: dead-lettered alone, with a reason -----------------------------------------------
    dead("payload-array", row(payload="[1, 2]"), "payload must be a JSON object"),
    dead("payload-string", row(payload='"hello"'), "payload must be a JSON object"),
    dead("payload-number", row(payload="42"), "payload must be a JSON object"),
    dead("payload-json-null", row(payload="null"), "payload must be a JSON object"),
    dead("payload-boolean", row(payload="true"), "payload must be a JSON object"),
    dead("overrides-array", row(overrides='[{"email": 1}]'), "overrides must be a JSON object"),
    dead("overrides-string", row(overrides='"x"'), "overrides must be a JSON object"),
    dead("recipients-empty", recipients([]), "recipients is empty"),
    dead("recipients-null-element", recipients([None, str(uuid.uuid4())]), "null entry"),
    dead("payload-600KB", row(payload={"blob": "x" * 600_000}), "over Novu's limit"),
    dead("payload-560KB-in-bytes-140K-chars", row(payload={"blob": "🎉" * 140_000}), "over Novu's limit"),
    dead(
        "payload-nested-1500-deep",
        row(payload='{"d": ' + "[" * 1500 + "]" * 1500 + "}"),
        "payload",
    ),
    dead(
        "workflow-unknown-to-novu",
        on_workflow("ghost-workflow"),
        "workflow_not_found",
        requests=1,
        known_workflows=("welcome",),
    ),
    dead("workflow-key-empty", on_workflow(""), "name should not be empty", requests=1),
    dead("workflow-missing", dangling_workflow, "does not exist"),
    # -- must not be sent: rejected without a Novu call, row left as it is -------------------------------------------
    rejected("publish-status-draft", row(publish_status="DRAFT"), "is DRAFT, only PUBLISH is sent"),
    rejected("publish-status-deleted", row(publish_status="DELETED"), "is DELETED"),
    rejected("deactivated", row(deactivated=True), "is deactivated"),
    rejected(
        "retracted-with-sql-reason",
        row(status="RETRACTED", retraction_reason=SQL_DROP),
        f"was retracted: {SQL_DROP}",
    ),
    rejected(
        "scheduled-infinity",
        row(scheduled_for="infinity"),
        "scheduled for",
    ),
    rejected("id-does-not-exist", no_such_id(10**12), "does not exist"),
    rejected("id-negative", no_such_id(-1), "does not exist"),
    rejected("id-zero", no_such_id(0), "does not exist"),
    rejected(
        "id-beyond-bigint",
        no_such_id(2**63),
        "does not exist",
    ),
]


def row_params() -> list[Any]:
    return [
        pytest.param(
            c,
            id=c.id,
            marks=[pytest.mark.xfail(strict=True, reason=f"bug: {c.bug}")] if c.bug else [],
        )
        for c in ROW_CASES
    ]


def canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


async def tables_exist(env: Env) -> bool:
    row_ = await env.repo.pool.fetchrow(
        "SELECT to_regclass('notify.ent_notification') IS NOT NULL AS n,"
        " to_regclass('notify.ent_notification_workflow') IS NOT NULL AS w,"
        " to_regclass('notify.ent_notification_delivery') IS NOT NULL AS d"
    )
    return bool(row_ and row_["n"] and row_["w"] and row_["d"])


async def snapshot(env: Env, notification_id: int) -> dict[str, Any] | None:
    found = await env.repo.pool.fetchrow(
        "SELECT notification_status::text AS status, attempts, payload::text AS payload, error_details::text AS details"
        " FROM notify.ent_notification WHERE id = $1",
        notification_id,
    )
    return None if found is None else dict(found)


def test_the_row_corpus_is_large_enough() -> None:
    assert len(ROW_CASES) >= 20 and len({c.id for c in ROW_CASES}) == len(ROW_CASES)
    kinds = {c.outcome for c in ROW_CASES}
    assert kinds == {Outcome.SENT, Outcome.DEAD_LETTERED, Outcome.REJECTED}


@pytest.mark.parametrize("case", row_params())
async def test_hostile_row_in_a_batch(env: Env, processor: NotificationProcessor, case: RowCase) -> None:
    if case.known_workflows is not None:
        env.configure_emulator(workflows=list(case.known_workflows))
    wf = await env.workflow("welcome")
    good = await env.insert(wf, GOOD_ROWS, recipients=GOOD_RECIPIENTS)
    bad = await case.make(env, wf)
    before = await snapshot(env, bad) if -(2**63) <= bad < 2**63 else None
    count_before = await env.repo.pool.fetchval("SELECT count(*) FROM notify.ent_notification")

    # -- no crash ----------------------------------------------------------------------------------------------------
    try:
        results = await processor.process_many([good[0], bad, *good[1:]], concurrency=4)
    except Exception as exc:
        await asyncio.sleep(1)  # process_many's other tasks keep running after gather raised: let them settle
        pytest.fail(f"process_many crashed on the hostile row: {type(exc).__name__}: {str(exc)[:200]}")
    by_id = {r.notification_id: r for r in results}
    assert len(results) == GOOD_ROWS + 1 and set(by_id) == {*good, bad}

    # -- the rest of the batch is unaffected -------------------------------------------------------------------------
    for g in good:
        assert by_id[g].outcome is Outcome.SENT, by_id[g]
    assert await env.all_in(good, "SENT")

    # -- nothing lost, no duplicate, tables intact --------------------------------------------------------------------
    assert await env.repo.pool.fetchval("SELECT count(*) FROM notify.ent_notification") == count_before
    assert await tables_exist(env)
    events = env.deliveries()
    identities = [(e["workflow"], e["subscriberId"], e["transactionId"]) for e in events]
    assert len(identities) == len(set(identities)) and env.stats()["duplicate_deliveries"] == 0
    mine = [e for e in events if e["transactionId"].startswith(f"xnovu-{bad}-")]
    theirs = [e for e in events if e not in mine]
    assert len(theirs) == GOOD_ROWS * GOOD_RECIPIENTS
    assert env.stats()["requests"] == GOOD_ROWS * GOOD_RECIPIENTS + case.requests

    # -- the hostile row's own outcome -------------------------------------------------------------------------------
    result = by_id[bad]
    assert result.outcome is case.outcome, result
    if case.reason is not None:
        assert result.reason is not None and case.reason in result.reason, result.reason
        assert "\n" not in result.reason, "one readable line"
    if case.outcome is Outcome.SENT:
        stored = await env.row(bad)
        assert stored["status"] == "SENT" and stored["dead_lettered_at"] is None
        distinct = list(dict.fromkeys(str(r) for r in stored["recipients"]))
        assert len(distinct) == case.recipients == result.success_count == result.total_recipients
        assert sorted(e["subscriberId"] for e in mine) == sorted(distinct), "each recipient exactly once"
        details = stored["error_details"]
        assert details["successCount"] == details["totalRecipients"] == case.recipients
        expected_payload = stored["payload"] if case.payload is None else case.payload
        assert canonical(stored["payload"]) == canonical(expected_payload), "the row holds the payload intact"
        for e in mine:
            assert canonical(e["payload"]) == canonical(expected_payload)
            assert e.get("overrides") == case.overrides
            assert e["workflow"] == (case.workflow or "welcome")
    elif case.outcome is Outcome.DEAD_LETTERED:
        stored = await env.row(bad)
        assert stored["status"] == "FAILED" and stored["dead_lettered_at"] is not None
        assert stored["next_attempt_at"] is None and stored["processed_at"] is not None
        details = stored["error_details"]
        assert details["dead_letter"] is True and case.reason in details["error"]
        assert "\n" not in details["error"]
        assert not mine, "a dead-lettered row has no accepted delivery"
        kept = await env.repo.pool.fetchval("SELECT payload::text FROM notify.ent_notification WHERE id = $1", bad)
        assert before is not None and kept == before["payload"], "the row's data is kept as it was, for a requeue"
    else:
        assert not mine, "I1: no Novu call"
        if before is not None:
            assert await snapshot(env, bad) == before, "a rejected row is left as it was"
    assert all(s not in repr(results) for s in SECRETS)


async def test_the_whole_corpus_in_one_batch_isolates_every_poison_row(
    env: Env, processor: NotificationProcessor
) -> None:
    """Every row case (bar known bugs and emulator-config cases) together, interleaved with good rows."""
    cases = [c for c in ROW_CASES if c.bug is None and c.known_workflows is None and c.id != "workflow-missing"]
    wf = await env.workflow("welcome")
    good = await env.insert(wf, 10, recipients=GOOD_RECIPIENTS)
    bad = {await c.make(env, wf): c for c in cases}
    ids = [*good, *bad]
    random.Random(7).shuffle(ids)
    results = await processor.process_many(ids, concurrency=8)
    by_id = {r.notification_id: r for r in results}
    assert all(by_id[g].outcome is Outcome.SENT for g in good)
    for nid, case in bad.items():
        assert by_id[nid].outcome is case.outcome, (case.id, by_id[nid])
    assert env.stats()["duplicate_deliveries"] == 0
    assert env.stats()["deliveries"] == 10 * GOOD_RECIPIENTS + sum(c.recipients for c in cases)
    assert await tables_exist(env)


# =====================================================================================================================
# B. Hostile settings, unreachable services, bad command-line arguments
# =====================================================================================================================

SECRET_DB_URL = f"postgresql://app:{DB_PASSWORD}@db.example.com:5432/app"
SETTINGS_VARS = {name.upper() for name in Settings.model_fields}


@pytest.fixture
def clean_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No inherited xnovu variable and no `.env`: only what the test sets is seen. Secrets set to spot leaks."""
    monkeypatch.chdir(tmp_path)
    for var in (*SETTINGS_VARS, "XNOVU_DEBUG"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("DATABASE_URL", SECRET_DB_URL)
    monkeypatch.setenv("NOVU_SECRET_KEY", NOVU_SECRET)
    return tmp_path


@pytest.fixture
def keep_logging() -> Iterator[None]:
    """The CLI configures root logging on a stream CliRunner closes afterwards: put it back."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        yield
    finally:
        root.handlers, root.level = handlers, level


def assert_readable(message: str, variable: str | None = None) -> None:
    assert message and "\n" not in message and "\r" not in message, f"one line: {message!r}"
    if variable is not None:
        assert message.startswith(f"{variable}"), message
    for secret in SECRETS:
        assert secret not in message, "I6: no secret in the message"


LONG_NAMESPACE = "n" * 10_000

BAD_SETTINGS: list[Any] = [
    ("POLL_BATCH_SIZE", "-1"),
    ("POLL_BATCH_SIZE", "0"),
    ("POLL_BATCH_SIZE", str(10**9)),
    ("POLL_BATCH_SIZE", "ten"),
    ("POLL_INTERVAL_MS", "0"),
    ("POLL_INTERVAL_MS", "-5"),
    ("POLL_INTERVAL_MS", "1e12"),
    ("POLL_INTERVAL_MS", "1000\nMAX_ATTEMPTS=0"),
    ("FAILED_POLL_INTERVAL_MS", str(10**12)),
    ("TEMPORAL_MAX_CONCURRENT_ACTIVITIES", "0"),
    ("NOVU_RATE_LIMIT_RPS", "0"),
    ("NOVU_RATE_LIMIT_RPS", "-3"),
    ("NOVU_RATE_LIMIT_RPS", "nan"),
    ("MAX_ATTEMPTS", "0"),
    ("TRIGGER_CONCURRENCY", "0"),
    ("PROCESSING_LEASE_MS", "0"),
    ("DATABASE_URL", "not a url"),
    ("DATABASE_URL", f"mysql://app:{DB_PASSWORD}@db.example.com/app"),
    ("DATABASE_URL", f"postgresql://app:{DB_PASSWORD}@db.example.com:99999/app"),
    ("DATABASE_URL", f"postgresql://app:{DB_PASSWORD}@[::1/app"),
    ("NOVU_API_URL", "javascript:alert(1)"),
    ("NOVU_API_URL", "file:///etc/passwd"),
    ("TEMPORAL_ADDRESS", "host:99999"),
    ("TEMPORAL_ADDRESS", "localhost"),
    ("WORKER_HEALTH_PORT", "70000"),
    ("WORKER_HEALTH_PORT", "-1"),
    ("POLL_ENTERPRISE_ID", "'; DROP TABLE x; --"),
    ("WORKER_LOG_LEVEL", "debug; rm -rf /"),
    ("RETRY_BACKOFF_BASE_MS", "7200000"),  # above RETRY_BACKOFF_MAX_MS (1 h)
    pytest.param("TEMPORAL_ADDRESS", "ho\nst:7233", id="TEMPORAL_ADDRESS=newline"),
    pytest.param("NOVU_API_URL", "http://localhost:99999", id="NOVU_API_URL=port-99999"),
]


def setting_id(case: Any) -> str:
    var, value = case
    return f"{var}={value[:24]!r}"


@pytest.mark.parametrize(
    ("variable", "value"),
    [pytest.param(*c, id=setting_id(c)) if type(c) is tuple else c for c in BAD_SETTINGS],
)
def test_hostile_setting_is_one_line_naming_the_variable(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert_readable(str(info.value), variable)
    assert info.value.__cause__ is None and info.value.__suppress_context__, "no chained pydantic dump (I6)"


def test_hostile_settings_corpus_is_large_enough() -> None:
    assert len(BAD_SETTINGS) >= 10


def test_a_huge_bad_value_is_not_echoed_whole(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEMPORAL_NAMESPACE", LONG_NAMESPACE)
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert_readable(str(info.value), "TEMPORAL_NAMESPACE")
    assert len(str(info.value)) < 400, len(str(info.value))


def test_a_bad_value_in_dotenv_is_the_same_one_line(clean_env: Path) -> None:
    (clean_env / ".env").write_text("POLL_BATCH_SIZE=-1\nMAX_ATTEMPTS=0\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert_readable(str(info.value))
    assert str(info.value).split(":")[0] in {"POLL_BATCH_SIZE", "MAX_ATTEMPTS"}


CLI_SETTINGS = [
    ("POLL_BATCH_SIZE", "-1"),
    ("DATABASE_URL", "not a url"),
    ("DATABASE_URL", f"postgresql://app:{DB_PASSWORD}@db.example.com:99999/app"),
    ("TEMPORAL_ADDRESS", "host:99999"),
    ("POLL_ENTERPRISE_ID", "'; DROP TABLE x; --"),
    ("NOVU_API_URL", "javascript:alert(1)"),
]


@pytest.mark.parametrize(("variable", "value"), [pytest.param(*c, id=setting_id(c)) for c in CLI_SETTINGS])
@pytest.mark.parametrize("command", [["db", "migrate"], ["dlq", "list"], ["doctor"]], ids=" ".join)
def test_cli_with_a_hostile_setting_fails_with_a_config_error(
    clean_env: Path, keep_logging: None, variable: str, value: str, command: list[str]
) -> None:
    result = CliRunner().invoke(app, command, env={variable: value})
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, ConfigError), repr(result.exception)
    assert_readable(str(result.exception), variable)
    assert all(s not in result.output for s in SECRETS)


def test_main_prints_one_stderr_line_and_exits_1(
    clean_env: Path, keep_logging: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from xnovu import cli

    monkeypatch.setenv("POLL_BATCH_SIZE", "'; DROP TABLE x; --")
    monkeypatch.setattr("sys.argv", ["xnovu", "db", "migrate"])
    with pytest.raises(SystemExit) as info:
        cli.main()
    assert info.value.code == 1
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: POLL_BATCH_SIZE"), captured.err
    assert "Traceback" not in captured.err and all(s not in captured.err + captured.out for s in SECRETS)


# -- unreachable services ------------------------------------------------------------------------------------------


async def test_database_at_a_closed_port_is_a_readable_database_error(clean_env: Path) -> None:
    settings = load_settings(database_url=f"postgresql://postgres:{DB_PASSWORD}@127.0.0.1:{free_port()}/xnovu")
    started = time.monotonic()
    with pytest.raises(DatabaseError) as info:
        await connect(settings)
    assert time.monotonic() - started < 15
    message = str(info.value)
    assert_readable(message)
    assert "cannot connect to Postgres" in message and "DATABASE_URL" in message and "***" in message
    assert info.value.__cause__ is None


async def test_temporal_at_a_closed_port_is_unavailable_within_15_s(clean_env: Path) -> None:
    settings = load_settings(temporal_address=f"127.0.0.1:{free_port()}")
    started = time.monotonic()
    with pytest.raises(TemporalUnavailableError) as info:
        await connect_temporal(settings)
    assert time.monotonic() - started < 15
    assert_readable(str(info.value))
    assert "TEMPORAL_ADDRESS" in str(info.value)


async def test_novu_at_a_closed_port_is_transient_retry_later(env: Env) -> None:
    settings = env.settings.model_copy(update={"novu_api_url": f"http://127.0.0.1:{free_port()}"})
    client = novu_client(settings)
    try:
        proc = build_processor(settings, env.repo, client)
        wf = await env.workflow("welcome")
        ids = await env.insert(wf, 2, recipients=2)
        results = await proc.process_many(ids, concurrency=2)
    finally:
        await client.aclose()
    for result in results:
        assert result.outcome is Outcome.RETRY and result.next_attempt_at is not None, result
        stored = await env.row(result.notification_id)
        assert stored["status"] == "FAILED" and stored["next_attempt_at"] is not None
        assert stored["dead_lettered_at"] is None and stored["error_details"]["dead_letter"] is False
        assert "could not reach Novu" in stored["error_details"]["error"]
        assert_readable(stored["error_details"]["error"])


async def test_novu_url_that_is_not_novu_fails_loudly_without_burning_the_row(env: Env) -> None:
    settings = env.settings.model_copy(update={"novu_api_url": env.emulator.url + "/not-novu"})
    client = novu_client(settings)
    try:
        proc = build_processor(settings, env.repo, client)
        wf = await env.workflow("welcome")
        [nid] = await env.insert(wf)
        with pytest.raises(NovuConfigurationError) as info:
            await proc.process(nid)
    finally:
        await client.aclose()
    assert_readable(str(info.value))
    assert "NOVU_API_URL" in str(info.value)
    stored = await env.row(nid)
    assert stored["status"] == "PROCESSING" and stored["attempts"] == 1 and stored["dead_lettered_at"] is None


async def test_novu_secret_key_with_a_trailing_newline_is_stripped_or_refused(
    env: Env, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("NOVU_SECRET_KEY", NOVU_SECRET + "\n")  # as read from a Docker/Kubernetes secret file
    try:
        key = load_settings().novu_secret_key
    except ConfigError as exc:
        assert_readable(str(exc), "NOVU_SECRET_KEY")
        return
    assert key is not None
    settings = env.settings.model_copy(update={"novu_secret_key": SecretStr(key.get_secret_value())})
    client = novu_client(settings)
    try:
        wf = await env.workflow("welcome")
        [nid] = await env.insert(wf)
        result = await build_processor(settings, env.repo, client).process(nid)
    finally:
        await client.aclose()
    assert NOVU_SECRET not in repr(result)
    assert result.outcome is Outcome.SENT, result.reason


# -- command-line arguments ----------------------------------------------------------------------------------------

USAGE_ERRORS = [
    ["trigger", "abc"],
    ["trigger"],
    ["trigger", "1", "two"],
    ["dlq", "list", "--limit", "0"],
    ["dlq", "list", "--limit", "-5"],
    ["dlq", "list", "--limit", "10001"],
    ["dlq", "requeue", "1; DROP TABLE x"],
    ["retract", "1"],
    ["retract", "'; DROP TABLE x; --", "--reason", "x"],
    ["emulator", "--port", "70000"],
    ["workflow", "status"],
]


@pytest.mark.parametrize("args", USAGE_ERRORS, ids=" ".join)
def test_bad_arguments_are_a_usage_error_exit_2(clean_env: Path, keep_logging: None, args: list[str]) -> None:
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert "Traceback" not in result.output


ONE_LINE_ERRORS = [
    (["retract", "1", "--reason", ""], "--reason must not be empty"),
    (["retract", "1", "--reason", "  \n\t "], "--reason must not be empty"),
    (["schedules", "pause", "x; rm -rf /"], "unknown schedule"),
    (["schedules", "resume", "../../etc/passwd"], "unknown schedule"),
    (["schedules", "trigger", "$(reboot)"], "unknown schedule"),
    (["schedules", "pause"], "name a schedule"),
]


@pytest.mark.parametrize(("args", "text"), ONE_LINE_ERRORS, ids=[" ".join(a) for a, _ in ONE_LINE_ERRORS])
def test_bad_argument_values_fail_with_one_line_before_connecting(
    clean_env: Path, keep_logging: None, args: list[str], text: str
) -> None:
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1, (result.output, result.exception)
    assert isinstance(result.exception, XnovuError), repr(result.exception)
    assert text in str(result.exception)
    assert_readable(str(result.exception))


def stack_env(settings: Settings) -> dict[str, str]:
    """The test stack's settings as the environment variables a user would set."""
    out: dict[str, str] = {}
    for name in Settings.model_fields:
        value = getattr(settings, name)
        if value is not None:
            out[name.upper()] = value.get_secret_value() if isinstance(value, SecretStr) else str(value)
    return out


async def test_cli_retract_with_a_sql_looking_reason_stores_it_verbatim(
    env: Env, clean_env: Path, keep_logging: None
) -> None:
    wf = await env.workflow("welcome")
    [nid] = await env.insert(wf)
    reason = f'{SQL_DROP} 🔥 "quoted" \\ backslash'
    runner = CliRunner()
    result = await asyncio.to_thread(
        runner.invoke, app, ["retract", str(nid), "--reason", reason], env=stack_env(env.settings)
    )
    assert result.exit_code == 0, (result.output, result.exception)
    stored = await env.row(nid)
    assert stored["status"] == "RETRACTED" and stored["retraction_reason"] == reason
    assert await tables_exist(env)
    again = await asyncio.to_thread(
        runner.invoke, app, ["retract", str(nid), "--reason", "twice"], env=stack_env(env.settings)
    )
    assert again.exit_code == 1 and isinstance(again.exception, XnovuError)
    assert_readable(str(again.exception))
    missing = await asyncio.to_thread(
        runner.invoke, app, ["dlq", "requeue", "--", str(nid), "-1"], env=stack_env(env.settings)
    )
    assert missing.exit_code == 1 and "not dead-lettered" in str(missing.exception)
    assert all(s not in result.output + again.output + missing.output for s in SECRETS)
