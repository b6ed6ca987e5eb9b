"""`xnovu rules list|sync|trigger` and `xnovu schedules pause|resume` on a rule Schedule (README "Rules")."""

from __future__ import annotations

import asyncio
import uuid

from tests.e2e.conftest import Cli
from tests.support import Env
from xnovu.db.rules import NewRule, insert_rule


async def test_rules_sync_list_and_pause_resume_of_a_rule_schedule_through_the_command_line(
    cli: Cli, env: Env
) -> None:
    (await cli("bootstrap")).ok()
    wf = await env.workflow("digest")
    good = await insert_rule(
        env.repo,
        NewRule("digest", wf, {"cron": "0 9 * * MON", "timezone": "Europe/Berlin"}, {"recipient": str(uuid.uuid4())}),
    )
    bad = await insert_rule(env.repo, NewRule("broken", wf, {"cron": "0 25 * * *"}, {"recipient": str(uuid.uuid4())}))
    event = await insert_rule(env.repo, NewRule("on signup", wf, {}, {}, trigger_type="EVENT"))

    synced = (await cli("rules", "sync")).ok().stdout
    assert f"created: xnovu-rule-{good}" in synced and "hour field" in synced, synced
    listed = {r["id"]: r for r in await cli.json("rules", "list")}
    assert listed[good]["state"] == "active" and listed[good]["cron"] == "0 9 * * MON"
    assert listed[good]["timezone"] == "Europe/Berlin" and listed[good]["next_fire"] and not listed[good]["problem"]
    assert listed[bad]["state"] == "none" and "hour field" in listed[bad]["problem"]
    assert listed[event]["state"] == "not handled" and "only CRON rules" in listed[event]["problem"]

    paused = (await cli("schedules", "pause", f"xnovu-rule-{good}", "--note", "freeze")).ok().stdout
    assert f"xnovu-rule-{good}" in paused
    table, as_json = await asyncio.gather(cli("rules", "list"), cli.json("rules", "list"))
    lines = table.ok().stdout.splitlines()
    assert any(line.startswith(f"rule {bad} (broken): ") and "hour field" in line for line in lines), lines
    assert any(line.startswith(f"rule {event} (on signup): not handled") for line in lines), lines
    assert {r["id"]: r for r in as_json}[good]["note"] == "freeze"
    (await cli("schedules", "resume", f"xnovu-rule-{good}")).ok()
    assert {r["id"]: r["state"] for r in await cli.json("rules", "list")}[good] == "active"

    missing = (await cli("rules", "trigger", "999999")).error_line()
    assert "rule 999999 does not exist" in missing
