"""Typed async access to the outbox: every method is one named query from `queries.sql`."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import asyncpg

from xnovu.config import Settings, redact_url
from xnovu.core.fairshare import Candidate, InFlight, has_room, select
from xnovu.core.fairshare import ClaimLimits as ClaimLimits  # owned by fairshare; imported from here too
from xnovu.core.models import ClaimBatch, ClaimedNotification, PollKind
from xnovu.core.priority import SORT_ORDER_MAX, SORT_ORDER_MIN, sort_order_in_range
from xnovu.db.fleet import FleetScope, seen_within_s
from xnovu.db.migrate import migrate
from xnovu.db.migrate import migrations as shipped_migrations
from xnovu.db.queries import q
from xnovu.db.traced import traced_connection_class
from xnovu.errors import ConfigError, DatabaseError, XnovuError
from xnovu.metrics import METRICS
from xnovu.tracing import Tracing


@dataclass(frozen=True)
class NotificationRow:
    """A notification joined with its Novu workflow (workflow fields are None when the workflow is missing)."""

    id: int
    name: str
    publish_status: str
    deactivated: bool | None
    status: str
    payload: Any
    recipients: list[str | None]
    overrides: Any
    scheduled_for: datetime | None
    attempts: int
    next_attempt_at: datetime | None
    dead_lettered_at: datetime | None
    enterprise_id: str | None
    retraction_reason: str | None
    error_details: Any
    workflow_key: str | None
    workflow_publish_status: str | None
    workflow_deactivated: bool | None
    default_channels: list[str] | None
    acknowledged: frozenset[str] = frozenset()
    """Recipients the ledger says Novu acknowledged (filled by `acquire`, empty from `load`)."""
    key_generations: dict[str, int] = field(default_factory=dict)
    """Idempotency-key generation of each recipient that needs a fresh key (filled by `acquire`)."""
    direct_claim: bool = False
    """PROCESSING under a direct call of the trigger core (no workflow): no workflow may confirm it (filled by
    `load`)."""
    db_now: datetime | None = None
    """Postgres' clock when the row was read: the one clock every claim condition uses (a worker's or Temporal's
    may be ahead or behind it)."""
    piece: int = 0
    """The fencing token of the attempt's current piece: `acquire` takes the next one (docs/design.md "Pieces,
    fencing tokens and unknown outcomes")."""
    previous_piece_open_s: float | None = None
    """Seconds since the previous piece began, when it never ended normally (filled by `acquire`): requests it had
    on the wire have unknown outcomes."""
    unresolved: frozenset[str] = frozenset()
    """Recipients, not acknowledged, whose outcome the ledger marks unknown (filled by `acquire`)."""
    unresolved_age_s: float | None = None
    """Seconds since the newest of those was marked."""
    priority: int = 0
    """The row's urgency (`xnovu_priority`, xnovu/core/priority.py): its child's Temporal priority and its turn at
    the token budget."""


@dataclass(frozen=True)
class DeliveryUpdate:
    """The outcome of one recipient in one attempt, to record in the ledger."""

    recipient_id: str
    status: str
    novu_transaction_id: str | None
    idempotency_key: str
    key_generation: int
    http_status: int | None
    error: str | None
    unknown: bool = False
    """Novu may or may not have processed it and its activity feed could not tell: looked up again before any
    resend (docs/novu-contract.md "Unknown outcomes")."""


@dataclass(frozen=True)
class Undecodable:
    """A json/jsonb value Python cannot decode (e.g. nested deeper than the interpreter's recursion limit).

    Decoding never raises, so one such row fails alone with a readable reason instead of crashing a batch (I5).
    """

    reason: str


def _decode_json(text: str) -> Any:
    try:
        return json.loads(text)
    except RecursionError:
        return Undecodable("it is nested too deeply to decode")
    except ValueError as exc:
        return Undecodable(f"it is not valid JSON ({exc})")


async def _reset_on_release(conn: asyncpg.Connection) -> None:
    """What the pool does when a connection comes back: nothing, unless a transaction was left open.

    asyncpg's default sends `pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL` on every release: one more
    round trip for every query xnovu makes through the pool, to undo session state xnovu never leaves behind (its
    locks are transaction-scoped or released explicitly, its settings transaction-local, and LISTEN has a connection
    of its own). A connection still inside a transaction is reset the full way.
    """
    if conn.is_in_transaction():
        await conn.reset()


async def _init_connection(conn: asyncpg.Connection) -> None:
    for typename in ("json", "jsonb"):
        await conn.set_type_codec(typename, encoder=json.dumps, decoder=_decode_json, schema="pg_catalog")
    # Every statement the pool sends afterwards counts in xnovu_db_round_trips_total (cost: docs/performance.md).
    conn.add_query_logger(METRICS.count_round_trip)


def _aware(value: datetime | None) -> datetime | None:
    """asyncpg decodes 'infinity'/'-infinity' as naive datetime.max/min: make them comparable (UTC)."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def _notification(row: asyncpg.Record) -> NotificationRow:
    values = dict(row)
    values["scheduled_for"] = _aware(values["scheduled_for"])
    if "db_now" in values:
        values["db_now"] = _aware(values["db_now"])
    if "acknowledged" in values:
        values["acknowledged"] = frozenset(values["acknowledged"] or ())
        generations = values.get("key_generations")
        values["key_generations"] = dict(generations) if isinstance(generations, dict) else {}
    if "unresolved" in values:
        values["unresolved"] = frozenset(values["unresolved"] or ())
    return NotificationRow(**values)


def _claimed(rows: Sequence[asyncpg.Record], order: Sequence[int] = ()) -> list[ClaimedNotification]:
    """Claimed rows as the poll fans them out: most urgent first, then in the claim's fair order (`order`, the ids
    as xnovu.core.fairshare chose them: enterprises interleaved by weight), then by id. The poll issues its child
    starts in this order and the server takes them in turn, so an urgent row claimed in one batch with a hundred
    others starts first, not last (measured: urgent rows of a batch of 100 started 0.4 to 2.2 s after their claim in
    id order), and an enterprise with nothing in flight starts beside the one with a backlog rather than after its
    hundred rows (docs/priority.md "Claims")."""
    position = {nid: i for i, nid in enumerate(order)}
    return sorted(
        (
            ClaimedNotification(
                notification_id=r["id"],
                attempt=r["attempts"],
                name=r["name"] or "",
                workflow_key=r["workflow_key"],
                enterprise_id=r["enterprise_id"],
                scheduled_for=_aware(r["scheduled_for"]),
                priority=int(r["priority"]),
            )
            for r in rows
        ),
        key=lambda c: (-c.priority, position.get(c.notification_id, len(position)), c.notification_id),
    )


#: Enterprises with something due per urgency level whose heads one claim reads (a bounded skip scan that probes at
#: most twice as many, those with nothing due included; each level's walk goes on from where the last one stopped).
FAIR_ENTERPRISES = 16
#: Urgency levels with something due one claim reads heads of, from the highest down (four times as many probed at
#: most).
FAIR_LEVELS = 4
#: Queued rows one recompute step gives a changed priority's urgency, in one short transaction (docs/priority.md).
RECOMPUTE_BATCH = 5_000


def _candidates(rows: Sequence[asyncpg.Record], *, retry: bool | None) -> list[Candidate]:
    """Rows of candidates_* / heads_*; the retry lane is the failed poll's (`retry`), else a row at its second
    attempt or later (as claim_flight groups what is in flight)."""
    return [
        Candidate(
            id=r["id"],
            level=int(r["level"]),
            enterprise=r["enterprise"],
            due=_aware(r["due"]),
            tokens=int(r["tokens"]),
            retry=retry if retry is not None else int(r["attempts"]) >= 1,
        )
        for r in rows
    ]


def database_url(settings: Settings) -> str:
    """The configured DATABASE_URL to connect with, or a readable error saying how to set it.

    `pgbouncer=true` is a hint for clients (it marks a transaction pooler), not a server setting: asyncpg would
    send it as one and the server would refuse the connection, so it is dropped here.
    """
    if settings.database_url is None:
        raise ConfigError("DATABASE_URL: not set; set it to your Postgres/Supabase URL, or run `xnovu dev`")
    return server_url(settings.database_url.get_secret_value())


#: Query parameters of DATABASE_URL that are meant for xnovu, not for the server (README, Operations: poolers).
_CLIENT_ONLY_PARAMS = frozenset({"pgbouncer"})


def server_url(url: str) -> str:
    """`url` without the parameters only xnovu reads, e.g. `pgbouncer=true` (the form Supabase documents for its
    transaction pooler).

    asyncpg sends every query parameter it does not know as a startup parameter, and both pgbouncer ("unsupported
    startup parameter: pgbouncer") and Postgres refuse one they do not know. The flag keeps its meaning for xnovu:
    `Settings.statement_cache_size` reads it from the unstripped URL. Every other parameter is kept byte for byte.
    """
    parts = urlsplit(url)
    if not parts.query:
        return url
    kept = [p for p in parts.query.split("&") if unquote(p.partition("=")[0]).lower() not in _CLIENT_ONLY_PARAMS]
    return urlunsplit(parts._replace(query="&".join(kept)))


async def connect(settings: Settings, *, min_size: int = 1, tracing: Tracing | None = None) -> Repository:
    """Open a connection pool sized from settings (statement cache off behind transaction poolers); with `tracing`
    on, every statement of the pool is a span (xnovu/db/traced.py)."""
    url = database_url(settings)
    connection_class = traced_connection_class(tracing, url) if tracing and tracing.enabled else asyncpg.Connection
    try:
        pool = await asyncpg.create_pool(
            url,
            connection_class=connection_class,
            min_size=min(min_size, settings.database_pool_size),
            max_size=settings.database_pool_size,
            statement_cache_size=settings.statement_cache_size,
            init=_init_connection,
            reset=_reset_on_release,
            command_timeout=60,
        )
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise DatabaseError(
            f"cannot connect to Postgres at {redact_url(url)}: {type(exc).__name__}: {_clean(exc, url)}; "
            "check DATABASE_URL and that the database is running"
        ) from None
    return Repository(
        pool, weights=settings.fair_share_weight_map, oldest_first=settings.send_order == "oldest-first"
    )


def _clean(exc: BaseException, url: str) -> str:
    """Exception text with any password of the URL removed (I6)."""
    text = str(exc).splitlines()[0] if str(exc) else ""
    secret = urlsplit(url).password
    return text.replace(secret, "***") if secret else text


class Repository:
    """The outbox tables behind typed methods; owns the asyncpg pool."""

    def __init__(
        self, pool: asyncpg.Pool, *, weights: Mapping[str, float] | None = None, oldest_first: bool = False
    ) -> None:
        self.pool = pool
        self.weights: Mapping[str, float] = dict(weights or {})
        """Fair-share weights by enterprise (FAIR_SHARE_WEIGHTS; an enterprise not named weighs 1)."""
        self.oldest_first = oldest_first
        """SEND_ORDER=oldest-first: claims take due rows in due order in one group and one window, and claimed rows
        carry no priority (the comparison mode of docs/performance.md "Noisy neighbour")."""
        self._fair_cursor: dict[str, dict[str, str]] = {}
        """Where each walk of the heads_* queries goes on, by walk and urgency level: the enterprise it starts at."""

    async def close(self) -> None:
        await self.pool.close()

    async def migrate(self) -> list[str]:
        """Apply missing migrations; the run lock is held on a second connection so it works behind a pooler."""
        async with self.pool.acquire() as conn:
            if self.pool.get_max_size() < 2:
                return await migrate(conn)
            async with self.pool.acquire() as lock_conn:
                return await migrate(conn, lock_conn)

    async def ping(self) -> None:
        await self.pool.fetchval(q("ping"))

    async def missing_migrations(self) -> list[str]:
        """The shipped migrations this database has not recorded (all of them before the first `migrate`)."""
        try:
            applied = {r["version"] for r in await self.pool.fetch(q("migrations_applied"))}
        except asyncpg.UndefinedTableError:
            applied = set()
        return [m.version for m in shipped_migrations() if m.version not in applied]

    async def schema_present(self) -> dict[str, bool]:
        row = await self.pool.fetchrow(q("schema_check"))
        return dict(row) if row else {}

    # -- polls ----------------------------------------------------------------------------------------------

    async def claim(
        self,
        kind: PollKind,
        *,
        batch_size: int,
        lease_ms: int,
        limits: ClaimLimits,
        lookahead_ms: int = 0,
        enterprise_id: str | None = None,
        recoverable: Sequence[int] = (),
        claim_key: str | None = None,
        fleet: FleetScope | None = None,
    ) -> ClaimBatch:
        """Claim up to `batch_size` rows for a poll kind, no more than `limits` lets the deployment have in flight.

        One transaction: claims take turns (advisory lock), read what is in flight by group, lock a bounded set of
        due candidates (the oldest due rows, and the heads of the (urgency, enterprise) groups of a bounded walk;
        SKIP LOCKED between workers), pick which to take (xnovu.core.fairshare: urgency first, then weighted fair
        share, within the windows) and compare-and-set those to PROCESSING (I4).
        The failed poll recovers only the PROCESSING rows in `recoverable` (expired, and their attempt is gone).

        `claim_key` names this claim (the poll run and its activity): run again under the same key, the claim returns
        the rows its first run claimed, so a poll whose workflow task was lost after claiming starts their children
        instead of orphaning them (PROCESSING, unstarted, counted in flight until their lease runs out).

        `fleet`: the workers whose workflow task slots `limits.for_fleet` counts (xnovu/db/fleet.py); without it,
        the claiming worker's own slots alone.
        """
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(q("claim_lock"))
            flight = await conn.fetchrow(
                q("claim_flight"),
                lease_ms,
                claim_key,
                limits.row_cap,
                fleet.namespace if fleet else None,
                fleet.task_queue if fleet else None,
                seen_within_s() * 1000,
            )
            assert flight is not None
            limits = limits.for_fleet(int(flight["fleet_slots"]))
            if flight["rerun"]:
                rows = await conn.fetch(q("claimed_with_key"), claim_key)
                return ClaimBatch(rows=_claimed(rows), batch_size=batch_size)
            third = lookahead_ms if kind is PollKind.SCHEDULED else lease_ms
            args: list[Any] = [batch_size, enterprise_id]
            if kind is not PollKind.NEW:
                args.append(third)
            if kind is PollKind.FAILED:
                args.append(list(recoverable))
            retry = True if kind is PollKind.FAILED else None
            oldest = await conn.fetch(q(f"candidates_{kind.value}"), *args)
            heads_args: list[Any] = [batch_size, enterprise_id, self._fair_cursor, FAIR_ENTERPRISES, FAIR_LEVELS]
            if kind is PollKind.SCHEDULED:
                heads_args.append(lookahead_ms)
            read = await conn.fetch(q(f"heads_{kind.value}"), *heads_args)
            heads = [r for r in read if r["id"] is not None]
            self._rotate([r for r in read if r["id"] is None])
            candidates = _candidates([*oldest, *heads], retry=retry)
            in_flight = [
                InFlight(int(g["level"]), g["enterprise"], bool(g["retry"]), int(g["rows"]), int(g["tokens"]))
                for g in flight["groups"]
            ]
            if self.oldest_first:  # one group, one window: due order only
                candidates = [replace(c, level=0, enterprise=None, retry=False) for c in candidates]
                in_flight = [InFlight(0, None, False, f.rows, f.tokens) for f in in_flight]
            ids = select(candidates, in_flight, limits, batch_size=batch_size, weights=self.weights)
            rows = await conn.fetch(q("claim_rows"), ids, lease_ms, claim_key) if ids else []
        waiting = len({c.id for c in candidates})
        chosen = set(ids)
        claimed = _claimed(rows, ids)
        if self.oldest_first:
            claimed = [replace(c, priority=0) for c in claimed]
        return ClaimBatch(
            rows=claimed,
            batch_size=batch_size,
            capacity_limited=len(ids) < min(batch_size, waiting),
            urgent_room=not self.oldest_first
            and has_room(in_flight, [c for c in candidates if c.id in chosen], limits, urgent=True),
        )

    def _rotate(self, walked: Sequence[asyncpg.Record]) -> None:
        """Where the next claim starts each walk of enterprises the heads_* query just made (one row per walk and
        level): at the enterprise its budget stopped at, past every one it probed, rows due or not; from the first
        again when it reached the last. A level this claim did not walk keeps its place."""
        for r in walked:
            levels = self._fair_cursor.setdefault(r["walk"], {})
            if r["enterprise"] is None:
                levels.pop(str(r["level"]), None)
            else:
                levels[str(r["level"])] = r["enterprise"]

    async def hold_sweep(self, limit: int = 1_000, *, timeout_s: float | None = None) -> tuple[int, int]:
        """Move held rows out of the claim indexes and released ones back (docs/design.md "Held rows"), at most
        `limit` each way; returns (marked, unmarked). Three short statements, outside the claim lock: the held
        workflows, the workflows of marked rows, then the sweep, which is given both as values."""
        held = set(await self.pool.fetchval(q("held_workflows"), timeout=timeout_s) or ())
        marked = await self.pool.fetchrow(q("held_row_workflows"), timeout=timeout_s)
        assert marked is not None
        released = [w for w in marked["ids"] if w not in held]
        row = await self.pool.fetchrow(
            q("hold_sweep"), limit, sorted(held), released, bool(marked["orphans"]), timeout=timeout_s
        )
        assert row is not None
        return int(row["held"]), int(row["released"])

    async def expired_leases(
        self, *, limit: int, lease_ms: int, enterprise_id: str | None = None
    ) -> list[tuple[int, int, float]]:
        """(id, attempt, seconds since the lease ran out) of PROCESSING rows whose lease ran out: candidates for
        recovery, if their attempt is dead."""
        rows = await self.pool.fetch(q("expired_leases"), limit, enterprise_id, lease_ms)
        return [(r["id"], r["attempts"], float(r["expired_for_s"])) for r in rows]

    async def extend_leases(self, attempts: Sequence[tuple[int, int]], lease_ms: int) -> int:
        """Renew the lease of these (id, attempt) claims; returns how many were still held."""
        if not attempts:
            return 0
        rows = await self.pool.fetch(q("extend_leases"), [i for i, _ in attempts], [a for _, a in attempts], lease_ms)
        return len(rows)

    # -- one notification -------------------------------------------------------------------------------------

    async def load(self, notification_id: int) -> NotificationRow | None:
        row = await self.pool.fetchrow(q("load_notification"), notification_id)
        return None if row is None else _notification(row)

    async def acquire(
        self,
        notification_id: int,
        attempt: int,
        lease_ms: int,
        *,
        start: str | None = None,
        window: int | None = None,
        mode: str = "workflow",
    ) -> NotificationRow | None:
        """Take (or, for the attempt's owner, confirm) the claim for exactly this attempt (I4) and load what it
        needs, or None if not ours. `mode`: "workflow" (the attempt's workflow: confirms a claim a poll made),
        "take" (a caller that asked for the next attempt: takes a PENDING/FAILED row or nothing, and the claim is
        direct), "direct" (that caller continuing: confirms only its direct claim).

        The ledger (`acknowledged`, `key_generations`) covers the `window` smallest distinct recipient ids from
        `start` on (None: from the first; all of them), so a piece of an attempt reads a bounded part of it.
        """
        row = await self.pool.fetchrow(q("acquire"), notification_id, attempt, lease_ms, start, window, mode)
        return None if row is None else _notification(row)

    async def fence(
        self, notification_id: int, attempt: int, lease_ms: int, piece: int, on_the_wire: Sequence[str] = ()
    ) -> bool:
        """True while this piece of this attempt holds the claim and the row may be sent; renews the lease (I1, I3)
        and marks the recipients of the request about to go out as on the wire."""
        value = await self.pool.fetchval(q("fence"), notification_id, attempt, lease_ms, piece, list(on_the_wire))
        return value is not None

    async def close_piece(
        self, notification_id: int, piece: int, *, resolved: bool, tokens: int | None = None
    ) -> bool:
        """The piece ends with nothing on the wire (its attempt goes on in a next piece); `tokens`: what the attempt
        still counts in flight from now on (the recipients not yet tried), None to leave it."""
        value = await self.pool.fetchval(q("close_piece"), notification_id, piece, resolved, tokens)
        return value is not None

    async def record_outcomes(self, notification_id: int, updates: Sequence[DeliveryUpdate]) -> None:
        if not updates:
            return
        await self.pool.execute(
            q("record_outcomes"),
            notification_id,
            [u.recipient_id for u in updates],
            [u.status for u in updates],
            [u.novu_transaction_id for u in updates],
            [u.idempotency_key for u in updates],
            [u.key_generation for u in updates],
            [u.http_status for u in updates],
            [u.error for u in updates],
            [u.unknown for u in updates],
        )

    async def finalize(
        self,
        notification_id: int,
        attempt: int,
        *,
        status: str,
        error_details: dict[str, Any],
        next_attempt_at: datetime | None = None,
        dead_letter: bool = False,
        piece: int | None = None,
        resolved: bool = True,
    ) -> bool:
        """End the attempt (SENT or FAILED); False if this attempt (in this `piece`, when given) no longer owns the
        row. `resolved` False: the piece did not resolve what its open predecessor may have sent, and that stays
        open for the next attempt."""
        value = await self.pool.fetchval(
            q("finalize"),
            notification_id,
            attempt,
            status,
            error_details,
            next_attempt_at,
            dead_letter,
            piece,
            resolved,
        )
        return value is not None

    async def release(
        self,
        notification_id: int,
        attempt: int,
        error_details: dict[str, Any],
        *,
        attempt_ran: bool,
        piece: int | None = None,
        resolved: bool = False,
    ) -> bool:
        """Give a claimed row back as PENDING; an attempt that sent nothing is not counted. `piece` and
        `resolved` as in `finalize`."""
        value = await self.pool.fetchval(
            q("release"), notification_id, attempt, error_details, attempt_ran, piece, resolved
        )
        return value is not None

    # -- operator actions ---------------------------------------------------------------------------------------

    async def retract(self, notification_id: int, reason: str) -> bool:
        return await self.pool.fetchval(q("retract"), notification_id, reason) is not None

    async def dlq_list(self, limit: int = 100) -> list[dict[str, Any]]:
        return [dict(r) for r in await self.pool.fetch(q("dlq_list"), limit)]

    async def dlq_requeue(self, ids: Sequence[int], *, force: bool = False) -> list[int]:
        """Dead-lettered rows back to PENDING; returns the ids requeued. A row whose delivery ledger was pruned is
        left alone unless `force`d: its retry would send to the recipients Novu already acknowledged as well
        (docs/retention.md)."""
        try:
            return [r["id"] for r in await self.pool.fetch(q("dlq_requeue"), list(ids), force)]
        except asyncpg.UndefinedColumnError as exc:
            raise DatabaseError("requeue needs migration 0014: run `xnovu db migrate`") from exc

    async def dlq_ledger_pruned(self, ids: Sequence[int]) -> dict[int, datetime]:
        """The dead-lettered rows among `ids` whose delivery ledger was pruned, and when."""
        return {r["id"]: r["pruned_at"] for r in await self.pool.fetch(q("dlq_ledger_pruned"), list(ids))}

    async def wakeup_switch(self) -> dict[str, Any] | None:
        """The database's wake-up switch: `notify` (do the triggers pg_notify), `changed_at`, `changed_by`; None
        before migration 0007 (the triggers then always notify)."""
        try:
            row = await self.pool.fetchrow(q("wakeup_switch"))
        except asyncpg.UndefinedTableError:
            return None
        return dict(row) if row else {"notify": True, "changed_at": None, "changed_by": None}

    async def set_wakeup_switch(self, notify: bool) -> dict[str, Any]:
        """Switch the triggers' pg_notify on or off for every session (README "Operations → Wake-ups")."""
        try:
            row = await self.pool.fetchrow(q("wakeup_switch_set"), notify)
        except asyncpg.UndefinedTableError as exc:
            raise DatabaseError("the wake-up switch needs migration 0007: run `xnovu db migrate`") from exc
        assert row is not None
        return dict(row)

    async def priority_order(self) -> dict[str, Any] | None:
        """The priority rule of the data (migration 0011): `higher_first`, `normal_sort_order`, `changed_at`,
        `changed_by`, and how many priorities exist; None before migration 0011."""
        try:
            row = await self.pool.fetchrow(q("priority_order"))
        except asyncpg.UndefinedTableError:
            return None
        return dict(row) if row else None

    async def set_priority_order(
        self, *, higher_first: bool, normal: int, batch: int = RECOMPUTE_BATCH
    ) -> tuple[dict[str, Any], int]:
        """Change which way sort_order points and which sort_order is normal, then recompute the urgency of every
        queued row that names a priority (`recompute_priorities`; docs/priority.md). Returns the new rule and how
        many rows changed urgency. A normal no sort_order can have is refused before anything is saved; an
        interrupted recompute is finished by the workers, `recompute_priorities` or running this again."""
        if not sort_order_in_range(normal):
            raise XnovuError(
                f"normal sort_order {normal} is out of range: a sort_order is an integer from {SORT_ORDER_MIN} to "
                f"{SORT_ORDER_MAX}"
            )
        try:
            row = await self.pool.fetchrow(q("priority_order_set"), higher_first, normal)
        except asyncpg.UndefinedTableError as exc:
            raise DatabaseError("the priority order needs migration 0011: run `xnovu db migrate`") from exc
        assert row is not None
        changed = await self.recompute_priorities(batch=batch)
        state = dict(row)
        state["priorities"] = (await self.priority_order() or {}).get("priorities", 0)
        return state, changed

    async def recompute_priority_step(
        self, batch: int = RECOMPUTE_BATCH, *, timeout_s: float | None = None
    ) -> tuple[int, int] | None:
        """One short transaction of the recompute after a sort_order or rule change (migration 0011): the next
        `batch` queued rows of one marked priority. Returns (priority id, rows whose urgency changed), or None when
        no priority is marked (or every marked one is being walked by someone else)."""
        row = await self.pool.fetchrow(q("priority_recompute_step"), batch, timeout=timeout_s)
        if row is None or row["priority"] is None:
            return None
        return int(row["priority"]), int(row["changed"])

    async def recompute_priorities(self, batch: int = RECOMPUTE_BATCH) -> int:
        """Every step until no priority is marked; returns how many rows changed urgency."""
        changed = 0
        while (step := await self.recompute_priority_step(batch)) is not None:
            changed += step[1]
        return changed

    async def status_counts(self) -> dict[str, int]:
        return {r["status"]: r["n"] for r in await self.pool.fetch(q("status_counts"))}

    async def dead_letter_count(self) -> int:
        return int(await self.pool.fetchval(q("dead_letter_count")))

    async def observability_sample(self, budget_name: str, rate: float, capacity: float) -> dict[str, float | None]:
        """The database gauges of /metrics (dead letters, expired leases, shared token budget) in one query."""
        row = await self.pool.fetchrow(q("observability_sample"), budget_name, rate, capacity)
        assert row is not None
        tokens = row["budget_tokens"]
        return {
            "dead_lettered": float(row["dead_lettered"]),
            "leases_expired": float(row["leases_expired"]),
            "lease_overrun_s": float(row["lease_overrun_s"]),
            "budget_tokens": None if tokens is None else float(tokens),
        }

    async def due_backlog(self, sample_rows: int) -> list[dict[str, Any]]:
        """The due backlog by (urgency, enterprise), reading at most `sample_rows` rows per part (queries.sql
        `due_backlog`; summarised by xnovu/core/backlog.py)."""
        return [dict(r) for r in await self.pool.fetch(q("due_backlog"), sample_rows)]


@dataclass(frozen=True)
class NewNotification:
    """A row to insert (demo, benchmark, tests)."""

    name: str
    recipients: Sequence[str]
    payload: dict[str, Any]
    publish_status: str = "PUBLISH"
    scheduled_for: datetime | None = None
    priority_id: int | None = None
    """A `notify.typ_notification_priority` id (its row's urgency follows by trigger, docs/priority.md)."""


async def upsert_workflow(
    repo: Repository,
    workflow_key: str,
    *,
    name: str | None = None,
    channels: Sequence[str] = ("IN_APP",),
    enterprise_id: str | None = None,
) -> int:
    """Create (or re-publish) a Novu workflow row; returns its id."""
    return int(
        await repo.pool.fetchval(
            q("upsert_workflow"), name or workflow_key, workflow_key, list(channels), enterprise_id
        )
    )


async def insert_notifications(
    repo: Repository, workflow_id: int, rows: Sequence[NewNotification], *, enterprise_id: str | None = None
) -> list[int]:
    """Insert many notifications in one statement and one transaction; returns their ids in order."""
    result = await repo.pool.fetch(
        q("insert_notifications"),
        workflow_id,
        [r.name for r in rows],
        [r.publish_status for r in rows],
        [json.dumps(r.payload) for r in rows],
        [",".join(r.recipients) for r in rows],
        [r.scheduled_for for r in rows],
        enterprise_id,
        [r.priority_id for r in rows],
    )
    return [r["id"] for r in result]


async def notification_states(repo: Repository, ids: Sequence[int]) -> list[dict[str, Any]]:
    return [dict(r) for r in await repo.pool.fetch(q("notification_states"), list(ids))]
