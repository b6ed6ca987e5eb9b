"""Typed access to the rules tables (README "Rules"): every method is one named query from `queries.sql`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from xnovu.core.rules import FireContent, Rule
from xnovu.db.queries import q
from xnovu.db.repository import Repository
from xnovu.errors import DatabaseError


@dataclass(frozen=True)
class RuleSyncState:
    """What the last sync recorded for one rule."""

    rule_id: int
    schedule_state: str
    problem: str | None
    synced_at: datetime
    last_fire: datetime | None


@dataclass(frozen=True)
class FireOutcome:
    """The notification of a (rule, time), and whether this call inserted it."""

    notification_id: int | None
    created: bool


class RuleRepository:
    """Rules, their fires and their sync state, on the repository's pool."""

    def __init__(self, repo: Repository) -> None:
        self.pool: asyncpg.Pool = repo.pool

    async def all(self) -> list[Rule]:
        return [Rule(**dict(r)) for r in await self.pool.fetch(q("rules_all"))]

    async def get(self, rule_id: int) -> Rule | None:
        row = await self.pool.fetchrow(q("rule_one"), rule_id)
        return Rule(**dict(row)) if row else None

    async def fire(self, rule: Rule, scheduled_time: datetime, name: str, content: FireContent) -> FireOutcome:
        """Insert the notification of (rule, scheduled_time) unless that fire already made one.

        The fire row and the notification commit together; a concurrent fire of the same key waits on the fire
        row's primary key and then finds it, so it never inserts a second notification.
        """
        async with self.pool.acquire() as conn, conn.transaction():
            claimed = await conn.fetchval(q("rule_fire_claim"), rule.id, scheduled_time)
            if claimed is None:
                existing = await conn.fetchval(q("rule_fire_existing"), rule.id, scheduled_time)
                return FireOutcome(existing, created=False)
            nid = await conn.fetchval(
                q("rule_fire_insert_notification"),
                rule.id,
                name,
                content.payload,
                content.recipients,
                content.overrides,
            )
            if nid is None:
                # The rule or its workflow went away since it was read: roll the fire back, the retry sees why.
                raise DatabaseError(f"rule {rule.id} or its workflow was deleted while firing")
            await conn.execute(q("rule_fire_link"), rule.id, scheduled_time, nid)
        return FireOutcome(nid, created=True)

    async def record_sync(self, states: Sequence[tuple[int, str, str | None]]) -> None:
        """(rule id, schedule state, problem) of every rule the sync handled."""
        if not states:
            return
        await self.pool.execute(
            q("rule_sync_record"), [s[0] for s in states], [s[1] for s in states], [s[2] for s in states]
        )

    async def known_schedules(self) -> set[int]:
        """Rule ids an earlier sync recorded (their Schedules may exist even if the rule is gone)."""
        return {r["rule_id"] for r in await self.pool.fetch(q("rule_sync_known"))}

    async def forget(self, rule_ids: Sequence[int]) -> None:
        if rule_ids:
            await self.pool.execute(q("rule_sync_forget"), list(rule_ids))

    async def sync_states(self) -> dict[int, RuleSyncState]:
        return {r["rule_id"]: RuleSyncState(**dict(r)) for r in await self.pool.fetch(q("rules_sync_states"))}

    async def status(self, problems_limit: int = 20) -> dict[str, Any]:
        """The `rules` section of /status: counts, last sync, and the rules that have a problem."""
        row = await self.pool.fetchrow(q("rules_status"))
        problems = await self.pool.fetch(q("rules_problems"), problems_limit)
        assert row is not None
        return {
            "cron_rules": row["cron_rules"],
            "active": row["active"],
            "paused": row["paused"],
            "last_sync": row["last_sync"].isoformat() if row["last_sync"] else None,
            "problems": [{"rule_id": p["rule_id"], "name": p["name"], "problem": p["problem"]} for p in problems],
        }


@dataclass(frozen=True)
class NewRule:
    """A rule to insert (demo, tests)."""

    name: str
    workflow_id: int
    trigger_config: Any
    rule_payload: Any
    trigger_type: str = "CRON"
    publish_status: str = "PUBLISH"
    enterprise_id: str | None = None
    business_id: str | None = None


async def insert_rule(repo: Repository, rule: NewRule) -> int:
    """Insert a rule unless one with that name (and enterprise) exists; returns its id."""
    return int(
        await repo.pool.fetchval(
            q("insert_rule"),
            rule.name,
            rule.workflow_id,
            rule.trigger_type,
            rule.trigger_config,
            rule.rule_payload,
            rule.publish_status,
            rule.enterprise_id,
            rule.business_id,
        )
    )
