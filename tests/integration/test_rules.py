"""Notification rules on a CRON (README "Rules"): the rules table kept in step with one Temporal Schedule per rule.

Real Postgres, real Temporal dev server, real HTTP emulator. A "sync" here is one call of the reconcile the
`xnovu-rules-sync` Schedule runs, so each test sees exactly one sync's effect.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from temporalio.api.workflowservice.v1 import ListScheduleMatchingTimesRequest
from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleIntervalSpec,
    ScheduleSpec,
    ScheduleState,
)
from temporalio.service import RPCError, RPCStatusCode

from tests.support import Env, eventually
from xnovu.core.rules import SYNC_NOTE_PREFIX, FireContent, SyncReport, fire_time, rule_schedule_id
from xnovu.db.migrate import migration_files
from xnovu.db.rules import NewRule, RuleRepository, insert_rule
from xnovu.temporal import searchattrs
from xnovu.temporal.bootstrap import bootstrap
from xnovu.temporal.connection import connect_temporal
from xnovu.temporal.rules import list_rules, reconcile, rule_schedule_config, trigger_rule
from xnovu.temporal.schedules import set_paused

BERLIN = ZoneInfo("Europe/Berlin")
ENTERPRISE = "7d7c4a4e-0000-4000-8000-00000000e001"
BUSINESS = "7d7c4a4e-0000-4000-8000-00000000b001"


def payload(n: int = 2, **extra: Any) -> dict[str, Any]:
    return {"recipients": [str(uuid.uuid4()) for _ in range(n)], "payload": {"title": "digest"}, **extra}


async def add_rule(
    env: Env,
    wf: int,
    name: str = "weekly digest",
    config: Any = None,
    rule_payload: Any = None,
    *,
    trigger_type: str = "CRON",
    enterprise_id: str | None = None,
    business_id: str | None = None,
) -> int:
    return await insert_rule(
        env.repo,
        NewRule(
            name,
            wf,
            {"cron": "0 9 * * MON", "timezone": "Europe/Berlin"} if config is None else config,
            payload() if rule_payload is None else rule_payload,
            trigger_type=trigger_type,
            enterprise_id=enterprise_id,
            business_id=business_id,
        ),
    )


async def client_for(env: Env) -> Client:
    client = await connect_temporal(env.settings)
    await bootstrap(client, env.settings)
    return client


async def sync(env: Env, client: Client) -> SyncReport:
    return await reconcile(client, RuleRepository(env.repo), rule_schedule_config(env.settings))


async def describe(client: Client, rule_id: int) -> Any:
    try:
        return await client.get_schedule_handle(rule_schedule_id(rule_id)).describe()
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return None
        raise


async def rule_rows(env: Env, rule_id: int) -> list[dict[str, Any]]:
    rows = await env.repo.pool.fetch(
        "SELECT *, notification_status::text AS status, publish_status::text AS publish FROM notify.ent_notification "
        "WHERE notification_rule_id = $1 ORDER BY id",
        rule_id,
    )
    return [dict(r) for r in rows]


# -- a rule becomes a Schedule -----------------------------------------------------------------------------------


async def test_a_cron_rule_becomes_one_schedule_with_its_cron_timezone_and_catchup_window(env: Env) -> None:
    client = await client_for(env)
    wf = await env.workflow("digest")
    rule_id = await add_rule(env, wf)
    first = await sync(env, client)
    assert first.created == [rule_id] and not first.problems

    desc = await describe(client, rule_id)
    assert desc.schedule.spec.time_zone_name == "Europe/Berlin"
    assert not desc.schedule.state.paused and desc.schedule.state.note.startswith(SYNC_NOTE_PREFIX)
    assert desc.schedule.policy.catchup_window == timedelta(minutes=5)
    action = desc.schedule.action
    assert isinstance(action, ScheduleActionStartWorkflow)
    assert action.workflow == "FireRuleWorkflow" and action.task_queue == env.settings.temporal_task_queue
    assert action.typed_search_attributes.get(searchattrs.RULE_ID) == rule_id
    times = [t.astimezone(BERLIN) for t in desc.info.next_action_times]
    assert times and all((t.weekday(), t.hour, t.minute) == (0, 9, 0) for t in times), times

    second = await sync(env, client)
    assert second.unchanged == [rule_id] and not (second.created or second.updated or second.paused)


async def test_a_rule_that_is_not_cron_gets_no_schedule_and_is_listed_as_not_handled(env: Env) -> None:
    client = await client_for(env)
    wf = await env.workflow("digest")
    event_rule = await add_rule(env, wf, "on signup", {"event": "signup"}, trigger_type="EVENT")
    report = await sync(env, client)
    assert report.created == [] and await describe(client, event_rule) is None
    [info] = await list_rules(client, RuleRepository(env.repo))
    assert info.state == "not handled" and info.problem == "not handled: only CRON rules are scheduled"

    cron_rule = await add_rule(env, wf, "was cron")
    assert (await sync(env, client)).created == [cron_rule]
    await env.execute("UPDATE notify.ent_notification_rule SET trigger_type = 'EVENT' WHERE id = $1", cron_rule)
    assert (await sync(env, client)).deleted == [cron_rule], "a rule that stops being CRON loses its Schedule"
    assert await describe(client, cron_rule) is None


# -- edits reach the Schedule after one sync --------------------------------------------------------------------


async def test_editing_pausing_and_deleting_a_rule_is_reflected_after_one_sync(env: Env) -> None:
    client = await client_for(env)
    wf = await env.workflow("digest")
    rule_id = await add_rule(env, wf)
    # Not xnovu's: a sync must leave it alone, even though its id looks close.
    other = await client.create_schedule(
        "xnovu-rule-7-backup",
        Schedule(
            action=ScheduleActionStartWorkflow("Other", id="other", task_queue="elsewhere"),
            spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=timedelta(hours=1))]),
            state=ScheduleState(paused=True),
        ),
    )
    await sync(env, client)

    await env.execute(
        "UPDATE notify.ent_notification_rule SET trigger_config = $2 WHERE id = $1",
        rule_id,
        {"cron": "15 18 * * *", "timezone": "America/New_York"},
    )
    assert (await sync(env, client)).updated == [rule_id]
    desc = await describe(client, rule_id)
    assert desc.schedule.spec.time_zone_name == "America/New_York"
    ny = [t.astimezone(ZoneInfo("America/New_York")) for t in desc.info.next_action_times]
    assert ny and all((t.hour, t.minute) == (18, 15) for t in ny), ny

    await env.execute("UPDATE notify.ent_notification_rule SET deactivated = true WHERE id = $1", rule_id)
    assert (await sync(env, client)).paused == [rule_id]
    state = (await describe(client, rule_id)).schedule.state
    assert state.paused and "deactivated" in state.note

    await env.execute(
        "UPDATE notify.ent_notification_rule SET deactivated = false, publish_status = 'DRAFT' WHERE id = $1", rule_id
    )
    await sync(env, client)
    state = (await describe(client, rule_id)).schedule.state
    assert state.paused and "DRAFT" in state.note

    await env.execute("UPDATE notify.ent_notification_rule SET publish_status = 'PUBLISH' WHERE id = $1", rule_id)
    assert (await sync(env, client)).resumed == [rule_id]
    assert not (await describe(client, rule_id)).schedule.state.paused

    # An operator's pause is the operator's: a sync does not undo it.
    await set_paused(client, [rule_schedule_id(rule_id)], True, "holiday freeze")
    await sync(env, client)
    state = (await describe(client, rule_id)).schedule.state
    assert state.paused and state.note == "holiday freeze"
    await set_paused(client, [rule_schedule_id(rule_id)], False)

    await env.execute("DELETE FROM notify.ent_notification_rule WHERE id = $1", rule_id)
    assert (await sync(env, client)).deleted == [rule_id]
    assert await describe(client, rule_id) is None
    assert (await other.describe()).schedule.state.paused, "a schedule xnovu does not own is left as it was"
    for sid in ("xnovu-poll-new", "xnovu-rules-sync"):
        await client.get_schedule_handle(sid).describe()  # still there


# -- fires ------------------------------------------------------------------------------------------------------


async def test_a_fire_inserts_one_pending_notification_from_the_rule_that_ends_sent(env: Env) -> None:
    wf = await env.workflow("digest", channels=("IN_APP", "EMAIL"))
    body = payload(2, overrides={"email": {"subject": "Hi"}})
    rule_id = await add_rule(env, wf, enterprise_id=ENTERPRISE, business_id=BUSINESS, rule_payload=body)
    async with env.worker(rules_sync_interval_ms=3_600_000) as manager:
        assert manager.client is not None
        result = await trigger_rule(
            manager.client, RuleRepository(env.repo), env.settings.temporal_task_queue, rule_id
        )
        assert result.created and result.notification_id is not None
        [row] = await rule_rows(env, rule_id)
        assert row["id"] == result.notification_id and row["publish"] == "PUBLISH"
        assert str(row["enterprise_id"]) == ENTERPRISE and str(row["business_id"]) == BUSINESS
        assert [str(r) for r in row["recipients"]] == body["recipients"]
        assert row["payload"] == {"title": "digest"} and row["overrides"] == {"email": {"subject": "Hi"}}
        assert row["name"].startswith("weekly digest (rule ") and result.scheduled_time.strftime("%H:%M") in row["name"]
        await eventually(lambda: env.all_in([row["id"]], "SENT"), timeout=30)
        fires = [w async for w in manager.client.list_workflows(f"XnovuRuleId = {rule_id}")]
        assert fires, "the fire workflow carries XnovuRuleId"
    assert {e["subscriberId"] for e in env.deliveries()} == set(body["recipients"])
    assert all(e["payload"] == {"title": "digest"} for e in env.deliveries())


async def test_a_fire_triggered_twice_for_the_same_time_inserts_one_row(env: Env) -> None:
    wf = await env.workflow("digest")
    rule_id = await add_rule(env, wf)
    at = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
    async with env.worker(poll_interval_ms=3_600_000, rules_sync_interval_ms=3_600_000) as manager:
        assert manager.client is not None
        repo = RuleRepository(env.repo)
        results = await asyncio.gather(
            *(trigger_rule(manager.client, repo, env.settings.temporal_task_queue, rule_id, at) for _ in range(3))
        )
        again = await trigger_rule(manager.client, repo, env.settings.temporal_task_queue, rule_id, at)
    assert len({r.notification_id for r in [*results, again]}) == 1
    # The three concurrent triggers join one workflow (same id) and share its result; the later one runs again
    # and finds the row the first made.
    assert all(r == results[0] for r in results) and results[0].created and not again.created
    assert len(await rule_rows(env, rule_id)) == 1

    # The same key at the database level, racing: still one row.
    rule = await repo.get(rule_id)
    assert rule is not None
    content = FireContent(payload()["recipients"], {"x": 1})
    later = fire_time(at + timedelta(days=7))
    outcomes = await asyncio.gather(*(repo.fire(rule, later, f"race {i}", content) for i in range(5)))
    assert sum(o.created for o in outcomes) == 1 and len({o.notification_id for o in outcomes}) == 1
    assert len(await rule_rows(env, rule_id)) == 2


async def test_the_rule_schedule_starts_a_fire_and_a_manual_trigger_for_that_time_joins_it(env: Env) -> None:
    wf = await env.workflow("digest")
    rule_id = await add_rule(env, wf, config={"cron": "0 3 1 1 *", "timezone": "UTC"})
    async with env.worker(poll_interval_ms=3_600_000) as manager:
        client = manager.client
        assert client is not None
        await sync(env, client)
        await client.get_schedule_handle(rule_schedule_id(rule_id)).trigger()
        rows = await eventually(lambda: rule_rows(env, rule_id), timeout=30)
        desc = await eventually(lambda: _recent_action(client, rule_id), timeout=10)
        scheduled = fire_time(desc.scheduled_at)
        assert desc.action.workflow_id == f"xnovu-rule-{rule_id}-fire-{scheduled:%Y-%m-%dT%H:%M:%SZ}"
        repo = RuleRepository(env.repo)
        again = await trigger_rule(client, repo, env.settings.temporal_task_queue, rule_id, scheduled)
        # Either it joined the scheduled fire's workflow (still running: its result is the one that created the
        # row) or it ran after it and found the (rule, time) already fired: the same row either way, never another.
        assert again.notification_id == rows[0]["id"]
    assert len(await rule_rows(env, rule_id)) == 1


async def _recent_action(client: Client, rule_id: int) -> Any:
    desc = await client.get_schedule_handle(rule_schedule_id(rule_id)).describe()
    return desc.info.recent_actions[-1] if desc.info.recent_actions else None


# -- bad rules fail alone ---------------------------------------------------------------------------------------

BAD_RULES: list[tuple[str, Any, Any, bool, str]] = [
    # (name, trigger_config, rule_payload, gets a paused schedule, words of the problem)
    ("bad cron", {"cron": "61 9 * * *"}, None, False, "minute field"),
    ("bad timezone", {"cron": "0 9 * * *", "timezone": "Mars/Olympus"}, None, False, "time zone"),
    ("unknown config", {"cron": "0 9 * * *", "every": "day"}, None, False, "unknown trigger_config key"),
    ("config not an object", "0 9 * * *", None, False, "trigger_config must be an object"),
    ("no recipients", None, {"payload": {"a": 1}}, True, "no recipients"),
    ("empty recipients", None, {"recipients": [], "payload": {}}, True, "empty"),
    ("payload not an object", None, {"recipients": [str(uuid.uuid4())], "payload": [1, 2]}, True, "payload must"),
]


async def test_bad_rules_fail_alone_with_a_readable_reason_in_list_status_and_logs(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="xnovu.temporal.rules")
    wf = await env.workflow("digest")
    draft_wf = await env.workflow("draft-workflow")
    await env.execute("UPDATE notify.ent_notification_workflow SET publish_status = 'DRAFT' WHERE id = $1", draft_wf)
    bad = {name: await add_rule(env, wf, name, config, body) for name, config, body, _, _ in BAD_RULES}
    bad["workflow unpublished"] = await add_rule(env, draft_wf, "workflow unpublished")
    good = await add_rule(env, wf, "good one")
    async with env.worker(rules_sync_interval_ms=3_600_000) as manager:
        client = manager.client
        assert client is not None and manager.health_port
        report = await sync(env, client)
        assert str(good) not in report.problems and not (await describe(client, good)).schedule.state.paused
        expected = {name: (paused, words) for name, _, _, paused, words in BAD_RULES}
        expected["workflow unpublished"] = (True, "DRAFT")
        infos = {i.name: i for i in await list_rules(client, RuleRepository(env.repo))}
        for name, (paused, words) in expected.items():
            rule_id = bad[name]
            assert words in report.problems[str(rule_id)], (name, report.problems)
            desc = await describe(client, rule_id)
            if paused:
                assert desc.schedule.state.paused and words in desc.schedule.state.note, name
            else:
                assert desc is None, f"{name}: no schedule for a spec Temporal cannot run"
            assert infos[name].problem and words in infos[name].problem, (name, infos[name])
            assert infos[name].state == ("paused" if paused else "none")
        assert infos["good one"].state == "active" and infos["good one"].problem is None

        async with httpx.AsyncClient() as http:
            status = (await http.get(f"http://127.0.0.1:{manager.health_port}/status")).json()
        problems = {p["rule_id"]: p["problem"] for p in status["rules"]["problems"]}
        assert set(problems) == set(bad.values()), status["rules"]
        assert status["rules"]["active"] == 1 and status["rules"]["cron_rules"] == len(bad) + 1

        # Every other rule keeps firing.
        fired = await trigger_rule(client, RuleRepository(env.repo), env.settings.temporal_task_queue, good)
        assert fired.created
        skipped = await trigger_rule(
            client, RuleRepository(env.repo), env.settings.temporal_task_queue, bad["no recipients"]
        )
        assert not skipped.created and skipped.notification_id is None and "no recipients" in (skipped.reason or "")
    logged = {getattr(r, "rule_id", None) for r in caplog.records if r.getMessage() == "rule has a problem"}
    assert set(bad.values()) <= logged


async def test_a_scheduled_rule_that_turns_bad_is_paused_with_the_reason_and_resumes_when_fixed(env: Env) -> None:
    client = await client_for(env)
    wf = await env.workflow("digest")
    rule_id = await add_rule(env, wf)
    await sync(env, client)
    await env.execute(
        "UPDATE notify.ent_notification_rule SET trigger_config = $2 WHERE id = $1", rule_id, {"cron": "nope"}
    )
    await sync(env, client)
    state = (await describe(client, rule_id)).schedule.state
    assert state.paused and "has 1 fields; expected 5" in state.note, state
    await env.execute(
        "UPDATE notify.ent_notification_rule SET trigger_config = $2 WHERE id = $1", rule_id, {"cron": "0 9 * * *"}
    )
    report = await sync(env, client)
    assert report.updated == [rule_id] and report.resumed == [rule_id]
    assert not (await describe(client, rule_id)).schedule.state.paused


# -- DST ---------------------------------------------------------------------------------------------------------


async def test_a_rule_at_0230_berlin_fires_once_on_the_day_the_clocks_jump(env: Env) -> None:
    """02:30 does not exist in Berlin on 2027-03-28 (02:00 → 03:00): Temporal fires once that day, not zero or two."""
    client = await client_for(env)
    wf = await env.workflow("digest")
    rule_id = await add_rule(env, wf, config={"cron": "30 2 * * *", "timezone": "Europe/Berlin"})
    await sync(env, client)

    async def matching(start: datetime, end: datetime) -> list[datetime]:
        s, e = Timestamp(), Timestamp()
        s.FromDatetime(start)
        e.FromDatetime(end)
        resp = await client.workflow_service.list_schedule_matching_times(
            ListScheduleMatchingTimesRequest(
                namespace=env.settings.temporal_namespace,
                schedule_id=rule_schedule_id(rule_id),
                start_time=s,
                end_time=e,
            )
        )
        return [t.ToDatetime().replace(tzinfo=UTC) for t in resp.start_time]

    spring = await matching(datetime(2027, 3, 26, 12, tzinfo=UTC), datetime(2027, 3, 30, 12, tzinfo=UTC))
    local_days = [t.astimezone(BERLIN).date().isoformat() for t in spring]
    assert local_days == ["2027-03-27", "2027-03-28", "2027-03-29", "2027-03-30"], spring
    assert [t.astimezone(BERLIN).strftime("%H:%M") for t in spring][0::2] == ["02:30", "02:30"]

    assert spring[1] == datetime(2027, 3, 28, 1, 30, tzinfo=UTC), "just after the jump: 03:30 CEST"

    # When the clocks go back, 02:30 happens twice: Temporal fires once.
    autumn = await matching(datetime(2027, 10, 30, 12, tzinfo=UTC), datetime(2027, 11, 1, 12, tzinfo=UTC))
    assert [t.astimezone(BERLIN).date().isoformat() for t in autumn] == ["2027-10-31", "2027-11-01"], autumn


# -- migration ---------------------------------------------------------------------------------------------------


async def test_the_rules_migration_runs_twice_without_touching_existing_rows(env: Env) -> None:
    wf = await env.workflow("digest")
    rule_id = await add_rule(env, wf)
    [nid] = await env.insert(wf)
    await env.execute("UPDATE notify.ent_notification SET notification_rule_id = $2 WHERE id = $1", nid, rule_id)
    [sql] = [text for version, text in migration_files() if version == "0006_rules"]
    async with env.repo.pool.acquire() as conn:
        await conn.execute(sql)
        await conn.execute(sql)
    assert await env.repo.migrate() == []
    assert (await env.row(nid))["notification_rule_id"] == rule_id
    assert (await RuleRepository(env.repo).get(rule_id)) is not None
    await env.execute("DELETE FROM notify.ent_notification_rule WHERE id = $1", rule_id)
    assert (await env.row(nid))["notification_rule_id"] is None, "ON DELETE SET NULL keeps the notification"


async def test_the_demo_rule_is_a_valid_every_minute_rule_inserted_once(env: Env) -> None:
    from xnovu.core.rules import plan_rule
    from xnovu.devtools.dev import insert_demo_rule

    first = await insert_demo_rule(env.settings)
    assert await insert_demo_rule(env.settings) == first, "a second `xnovu dev --demo` reuses the rule"
    rule = await RuleRepository(env.repo).get(first)
    assert rule is not None and plan_rule(rule).active and plan_rule(rule).cron == "* * * * *"
