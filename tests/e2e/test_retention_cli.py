"""`xnovu db prune` and `xnovu dlq requeue --force` end to end (docs/retention.md): real subprocesses, real database."""

from __future__ import annotations

from tests.e2e.conftest import Cli
from tests.integration.test_retention import ended, ledger
from tests.support import Env


async def test_db_prune_dry_run_counts_then_prune_removes_and_requeue_refuses_the_pruned_dead_letter(
    env: Env, cli: Cli
) -> None:
    wf = await env.workflow("welcome")
    old = await ended(env, wf, status="SENT", days_ago=40, recipients=2, n=2)
    [dead] = await ended(env, wf, status="FAILED", days_ago=40, dead=True, recipients=2)

    preview = await cli.json("db", "prune", "--dry-run")
    assert preview["deliveries"] == 6 and preview["ledger_notifications"] == 3, preview
    assert preview["notifications"] is None, "notifications are counted only with --notifications"
    assert (await ledger(env, [*old, dead]))[dead] == 2, "a dry run removes nothing"
    table = (await cli("db", "prune", "--dry-run")).ok().stdout
    assert "would remove" in table and "6" in table, table

    run = await cli.json("db", "prune")
    assert run["deliveries"] == 6 and run["finished_at"] and run["source"] == "cli", run
    assert set((await ledger(env, [*old, dead])).values()) == {0}

    line = (await cli("dlq", "requeue", dead)).error_line()
    assert str(dead) in line and "pruned" in line and "--force" in line, line
    assert (await env.row(dead))["status"] == "FAILED"
    listed = await cli.json("dlq", "list")
    assert listed[0]["id"] == dead and listed[0]["ledger_pruned_at"], listed
    assert str(dead) in (await cli("dlq", "requeue", dead, "--force")).ok().stdout
    assert (await env.row(dead))["status"] == "PENDING"

    gone = await cli.json("db", "prune", "--notifications")
    assert gone["notifications"] == 2 and await env.statuses(old) == {}, gone
    assert "RETENTION_DAYS: " in (await cli("db", "prune", env={"RETENTION_DAYS": "0"})).error_line()
