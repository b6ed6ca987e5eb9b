"""The `xnovu` command line end to end (README "Configuration", "Command line"): real subprocesses against the real
embedded stack.

Every command runs as `python -m xnovu …` with its configuration in environment variables only, from an empty
folder; each output is also checked for the fake secrets of the test stack (I6) by the `cli` fixture.
"""

from __future__ import annotations

import asyncio
import json
import uuid

import asyncpg
import pytest

from tests.e2e.conftest import Cli
from tests.support import DB_PASSWORD, Env, eventually
from xnovu.devtools.stack import free_port

SCHEDULE_IDS = ["xnovu-poll-new", "xnovu-poll-failed", "xnovu-poll-scheduled", "xnovu-rules-sync", "xnovu-retention"]
DAY_MS = 86_400_000


async def paused(cli: Cli) -> dict[str, bool]:
    return {s["id"]: s["paused"] for s in await cli.json("schedules", "list")}


# -- doctor ----------------------------------------------------------------------------------------------------


async def test_doctor_passes_every_check_on_a_bootstrapped_stack(cli: Cli) -> None:
    (await cli("bootstrap")).ok()
    as_json, as_table = await asyncio.gather(cli("doctor", "--json"), cli("doctor"))
    checks = as_json.ok().json()
    assert [c["name"] for c in checks] == [
        "postgres",
        "schema",
        "wakeups",
        "temporal",
        "namespace",
        "temporal-fairness",
        "schedule-runs",
        "novu",
    ]
    assert all(c["ok"] for c in checks), checks
    table = as_table.ok().stdout
    assert "FAIL" not in table and table.count(" ok ") == 8, table
    fairness = {c["name"]: c for c in checks}["temporal-fairness"]
    assert "not probed" in fairness["detail"] and "--fairness-probe" in fairness["detail"], "opt-in: not by default"


async def test_db_wakeups_switches_the_notify_off_and_on_and_doctor_says_when_the_worker_disagrees(cli: Cli) -> None:
    assert "wake-up notifications: on" in (await cli("db", "wakeups", "status")).ok().stdout
    off = (await cli("db", "wakeups", "off")).ok().stdout
    assert "wake-up notifications: off (changed " in off and "poll interval" in off, off
    assert (await cli.json("db", "wakeups", "status"))["notify"] is False

    doctor = await cli("doctor", "--json")
    assert doctor.returncode == 1, doctor
    wakeups = {c["name"]: c for c in doctor.json()}["wakeups"]
    assert not wakeups["ok"] and "switched off in the database" in wakeups["detail"], wakeups
    quiet = {c["name"]: c for c in (await cli("doctor", "--json", env={"WAKEUP_ENABLED": "false"})).json()}
    assert quiet["wakeups"]["ok"], "a worker that does not listen agrees with a database that does not notify"

    assert "wake-up notifications: on (changed " in (await cli("db", "wakeups", "on")).ok().stdout
    assert {c["name"]: c for c in (await cli("doctor", "--json")).json()}["wakeups"]["ok"]
    assert "unknown action" in (await cli("db", "wakeups", "maybe")).error_line()


async def test_doctor_fails_the_novu_check_with_a_wrong_key_and_never_prints_the_key(cli: Cli) -> None:
    wrong = f"wrong-key-{uuid.uuid4().hex}"
    cli.extra_secrets = (wrong,)  # every output of this test is checked for it
    env = {"NOVU_SECRET_KEY": wrong}
    as_json, as_table = await asyncio.gather(cli("doctor", "--json", env=env), cli("doctor", env=env))
    assert as_json.returncode == 1, as_json
    checks = {c["name"]: c for c in as_json.json()}
    assert not checks["novu"]["ok"]
    assert "NOVU_SECRET_KEY" in checks["novu"]["detail"], "the failed check should say which variable to fix"
    assert all(checks[name]["ok"] for name in ("postgres", "schema", "temporal")), checks
    assert as_table.returncode == 1 and "FAIL" in as_table.stdout, as_table


async def test_doctor_reports_an_unreachable_database_readably_without_the_password(cli: Cli) -> None:
    closed = {"DATABASE_URL": f"postgresql://postgres:{DB_PASSWORD}@127.0.0.1:{free_port()}/xnovu"}
    doctor, migrate = await asyncio.gather(cli("doctor", "--json", env=closed), cli("db", "migrate", env=closed))
    assert doctor.returncode == 1, doctor
    checks = {c["name"]: c for c in doctor.json()}
    assert not checks["postgres"]["ok"] and not checks["schema"]["ok"]
    detail = checks["postgres"]["detail"]
    assert "\n" not in detail and "cannot connect to Postgres" in detail and "DATABASE_URL" in detail, detail
    assert checks["temporal"]["ok"] and checks["novu"]["ok"], checks
    # A command that needs the database fails with one line, password masked.
    line = migrate.error_line()
    assert "cannot connect to Postgres" in line and "***" in line, line


# -- configuration ---------------------------------------------------------------------------------------------

BAD_VALUES = [
    ("POLL_BATCH_SIZE", "0", ["worker", "start"]),
    ("TEMPORAL_ADDRESS", "nonsense", ["doctor"]),
    ("WORKER_LOG_LEVEL", "loud", ["db", "migrate"]),
    ("NOVU_API_URL", "ftp://novu", ["bootstrap"]),
    ("DATABASE_URL", f"mysql://root:{DB_PASSWORD}@localhost/db", ["dlq", "list"]),
]


async def test_a_bad_environment_value_is_one_stderr_line_naming_the_variable(cli: Cli) -> None:
    results = await asyncio.gather(
        *(cli(*command, env={variable: value}, timeout=30) for variable, value, command in BAD_VALUES)
    )
    for (variable, _, _), result in zip(BAD_VALUES, results, strict=True):
        line = result.error_line()
        assert line.startswith(f"error: {variable}:"), line
        assert result.stdout == "", result


# -- db / bootstrap --------------------------------------------------------------------------------------------


async def test_db_migrate_creates_the_schema_once_and_then_reports_it_up_to_date(env: Env, cli: Cli) -> None:
    name = f"empty_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(env.stack.admin_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    url = {"DATABASE_URL": env.stack.database_url(name)}
    first = (await cli("db", "migrate", env=url)).ok()
    assert first.stdout.startswith("applied: ") and "0001" in first.stdout, first
    second = (await cli("db", "migrate", env=url)).ok()
    assert "up to date" in second.stdout, second
    conn = await asyncpg.connect(env.stack.database_url(name))
    try:
        assert await conn.fetchval("SELECT to_regclass('notify.ent_notification') IS NOT NULL")
    finally:
        await conn.close()


@pytest.mark.fresh_namespace
async def test_bootstrap_twice_creates_then_leaves_the_schedules_unchanged(cli: Cli) -> None:
    first = (await cli("bootstrap")).ok().stdout
    assert "namespace: created" in first
    assert all(f"schedule {sid}: created" in first for sid in SCHEDULE_IDS), first
    second = (await cli("bootstrap")).ok().stdout
    assert "namespace: unchanged" in second and "search attributes added: none" in second, second
    assert all(f"schedule {sid}: unchanged" in second for sid in SCHEDULE_IDS), second


# -- schedules -------------------------------------------------------------------------------------------------


async def test_pausing_or_triggering_a_schedule_that_does_not_exist_is_one_line_with_the_fix(cli: Cli) -> None:
    """A rule id mistyped (a name the parser accepts, but no such Schedule): Temporal's own "workflow not found for
    ID: temporal-sys-scheduler:…" used to reach the operator; now one line says where the schedules are listed."""
    (await cli("bootstrap")).ok()
    for command in ("pause", "resume", "trigger"):
        line = (await cli("schedules", command, "xnovu-rule-999")).error_line()
        assert "no schedule xnovu-rule-999 in this namespace" in line and "xnovu schedules list" in line, line
        assert "temporal-sys-scheduler" not in line, line


async def test_schedules_list_pause_resume_and_trigger(cli: Cli) -> None:
    (await cli("bootstrap")).ok()
    listed = await cli.json("schedules", "list")
    assert [s["id"] for s in listed] == SCHEDULE_IDS
    assert all(s["note"] for s in listed), listed
    assert [s["interval_s"] for s in listed] == [1, 1, 1, 60, 3600], listed
    assert not any(s["paused"] for s in listed)

    assert "xnovu-poll-new" in (await cli("schedules", "pause", "new")).ok().stdout
    (await cli("bootstrap")).ok()  # bootstrap keeps the paused state (README "Operations")
    assert await paused(cli) == {
        "xnovu-poll-new": True,
        "xnovu-poll-failed": False,
        "xnovu-poll-scheduled": False,
        "xnovu-rules-sync": False,
        "xnovu-retention": False,
    }

    resumed, bogus, nameless, triggered = await asyncio.gather(
        cli("schedules", "resume", "--all"),
        cli("schedules", "pause", "bogus"),
        cli("schedules", "pause"),  # neither a name nor --all
        cli("schedules", "trigger", "new"),
    )
    assert resumed.ok().stdout.count("xnovu-poll-") == 3, resumed

    async def none_paused() -> bool:
        # Seen once with a load average of 5: the list right after the resume still showed a schedule paused (a
        # trigger of the same schedule ran concurrently). What must hold is that the resume takes effect.
        return not any((await paused(cli)).values())

    await eventually(none_paused, timeout=15, interval=0.5)
    line = bogus.error_line()
    assert "bogus" in line and "xnovu-poll-new" in line, line
    assert "--all" in nameless.error_line()
    assert "xnovu-poll-new" in triggered.ok().stdout


async def test_worker_health_without_a_worker_fails_with_one_line(cli: Cli) -> None:
    result = await cli("worker", "health", env={"WORKER_HEALTH_PORT": free_port()})
    assert result.returncode == 1, result
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert len(lines) == 1 and "unreachable" in lines[0], lines


async def test_a_command_before_bootstrap_fails_with_one_line(cli: Cli) -> None:
    line = (await cli("schedules", "pause", "new")).error_line()
    assert "no schedule xnovu-poll-new in this namespace" in line and "run `xnovu bootstrap`" in line, line


# -- notifications ---------------------------------------------------------------------------------------------


async def test_trigger_wait_json_sends_the_row_and_prints_the_result(env: Env, cli: Cli) -> None:
    wf = await env.workflow("welcome")
    # Long intervals and paused schedules: only the CLI trigger may send this row (no race with a poll).
    async with env.worker(poll_interval_ms=DAY_MS, failed_poll_interval_ms=DAY_MS, scheduled_poll_interval_ms=DAY_MS):
        (await cli("schedules", "pause", "--all")).ok()
        [nid] = await env.insert(wf, recipients=2, payload={"via": "cli"})
        out = await cli.json("trigger", nid, "--wait", timeout=60)
        assert out["workflow_ids"] == [f"notification-{nid}-a1"]
        [result] = out["results"]
        assert result["notification_id"] == nid
        assert result["outcome"] == "sent" and result["notification_status"] == "SENT", result
        assert result["success_count"] == 2 and result["total_recipients"] == 2
        assert len(result["novu_transaction_ids"]) == 2
        row = await env.row(nid)
        assert row["status"] == "SENT" and row["attempts"] == 1
        assert sorted(d["subscriberId"] for d in env.deliveries()) == sorted(str(r) for r in row["recipients"])
        # Triggering it again sends nothing more (I2): the attempt reports it was already sent.
        again = await cli.json("trigger", nid, "--wait", timeout=60)
    [repeat] = again["results"]
    assert again["workflow_ids"] == [f"notification-{nid}-a1"], "a sent row is joined, not given a new attempt"
    assert repeat["outcome"] == "skipped" and repeat["notification_status"] == "SENT", repeat
    assert env.stats()["deliveries"] == 2 and env.stats()["duplicate_deliveries"] == 0


async def test_trigger_wait_starts_each_attempt_once(env: Env, cli: Cli) -> None:
    """--wait waits for the attempt it started; it never starts another one (which would use up an attempt)."""
    wf = await env.workflow("welcome")
    async with env.worker(poll_interval_ms=DAY_MS, failed_poll_interval_ms=DAY_MS, scheduled_poll_interval_ms=DAY_MS):
        (await cli("schedules", "pause", "--all")).ok()
        [nid] = await env.insert(wf)
        env.configure_emulator(error_rate=1.0)
        res = await cli("trigger", nid, "--wait", "--json", timeout=60)
    assert res.returncode == 1, "not sent: the command says so"
    [result] = json.loads(res.stdout)["results"]
    assert result["outcome"] == "retry" and result["attempt"] == 1, result
    row = await env.row(nid)
    assert row["status"] == "FAILED" and row["attempts"] == 1


async def test_trigger_of_an_unknown_id_fails_with_does_not_exist(cli: Cli) -> None:
    line = (await cli("trigger", "999999")).error_line()
    assert "999999" in line and "does not exist" in line, line


async def test_workflow_status_of_a_polled_send_is_completed(env: Env, cli: Cli) -> None:
    wf = await env.workflow("welcome")
    [nid] = await env.insert(wf)
    async with env.worker():
        await eventually(lambda: env.all_in([nid], "SENT"), timeout=30)
        wid = f"notification-{nid}-a1"
        shown, waited = await asyncio.gather(cli("workflow", "status", wid, "--json"), cli("workflow", "result", wid))
    info, result = shown.ok().json(), waited.ok().json()
    assert info["status"] == "COMPLETED", info
    assert info["workflow_id"] == wid and info["type"] == "NotificationTriggerWorkflow"
    assert info["task_queue"] == env.settings.temporal_task_queue
    assert result["outcome"] == "sent" and result["notification_id"] == nid, result


async def test_retract_marks_a_pending_row_retracted_with_its_reason(env: Env, cli: Cli) -> None:
    wf = await env.workflow("welcome")
    [nid] = await env.insert(wf)
    (await cli("retract", nid, "--reason", "x")).ok()
    row = await env.row(nid)
    assert row["status"] == "RETRACTED" and row["retraction_reason"] == "x" and row["retracted_at"] is not None
    assert "does not exist or is already" in (await cli("retract", nid, "--reason", "again")).error_line()


async def test_retracting_a_sent_row_fails_and_leaves_it_sent(env: Env, cli: Cli) -> None:
    wf = await env.workflow("welcome")
    [nid] = await env.insert(wf)
    await env.execute(
        "UPDATE notify.ent_notification SET notification_status = 'SENT', processed_at = now() WHERE id = $1", nid
    )
    line = (await cli("retract", nid, "--reason", "too late")).error_line()
    assert str(nid) in line and "SENT" in line, line
    row = await env.row(nid)
    assert row["status"] == "SENT" and row["retraction_reason"] is None


# -- dead-letter queue -----------------------------------------------------------------------------------------


async def test_dlq_list_shows_a_dead_lettered_row_and_requeue_makes_it_pending(env: Env, cli: Cli) -> None:
    wf = await env.workflow("welcome")
    dead, alive = await env.insert(wf, 2)
    await env.execute(
        """UPDATE notify.ent_notification SET notification_status = 'FAILED', dead_lettered_at = now(),
           attempts = 5, error_details = '{"error": "boom"}' WHERE id = $1""",
        dead,
    )
    listed = await cli.json("dlq", "list")
    assert [r["id"] for r in listed] == [dead], listed
    assert listed[0]["attempts"] == 5 and listed[0]["error"] == "boom" and listed[0]["dead_lettered_at"], listed

    assert str(dead) in (await cli("dlq", "requeue", dead)).ok().stdout
    row = await env.row(dead)
    assert row["status"] == "PENDING" and row["attempts"] == 0 and row["dead_lettered_at"] is None

    # The list is empty now; neither a never-dead-lettered row nor the one just requeued can be requeued again.
    empty, *again = await asyncio.gather(
        cli("dlq", "list", "--json"), *(cli("dlq", "requeue", n) for n in (alive, dead))
    )
    assert empty.ok().json() == []
    for nid, result in zip((alive, dead), again, strict=True):
        line = result.error_line()
        assert "not dead-lettered" in line and str(nid) in line, line
    assert (await env.row(alive))["status"] == "PENDING"
