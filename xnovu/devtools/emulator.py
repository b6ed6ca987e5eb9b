"""A local stand-in for the Novu events API, faithful enough to test xnovu's failure handling (docs/novu-contract.md).

It answers the routes xnovu and the official SDK use (trigger, bulk, cancel, broadcast) with Novu's status
codes, envelopes, error bodies, token-bucket rate limiting and Idempotency-Key semantics (docs/novu-contract.md),
records every accepted delivery, and can inject the faults that matter for at-most-once delivery: 500s before
processing, and "timeouts" where the work is done but the answer arrives too late for the client to see it. The
activity feed (`GET /v1/notifications?transactionId=…`) lists what was processed, each entry appearing
``feed_delay_ms`` after processing like Novu's, whose worker creates it from the queued job.

Layers:

    NovuEmulator     state and rules; framework-free but for asyncio (latency and in-flight windows are real)
    create_app       Starlette routes: the Novu API under /v1, inspection and fault control under /emulator
    EmulatorServer   uvicorn in a background thread, for tests, `xnovu dev` and benchmarks
    serve            uvicorn in the foreground, for `xnovu emulator`

All state lives on the server's event loop: handlers mutate it between awaits, so no locks are needed. Read
:attr:`NovuEmulator.events` from another thread only through the HTTP inspection API (or after stopping).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import random
import socket
import threading
import time
import urllib.parse
import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Literal

import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

__all__ = [
    "ApiReply",
    "ApiRequest",
    "EmulatorConfig",
    "EmulatorServer",
    "NovuEmulator",
    "create_app",
    "serve",
]

logger = logging.getLogger(__name__)

RouteKind = Literal["trigger", "bulk", "broadcast", "cancel", "feed"]

#: Novu's per-request (per-event for bulk) body limit.
MAX_PAYLOAD_BYTES = 524_288
MAX_BULK_EVENTS = 100
MAX_RECIPIENTS = 100
MAX_IDEMPOTENCY_KEY_LENGTH = 255
#: Rate-limit window; Novu's limit header is RPS x window and its bucket holds 110% of that.
RATE_WINDOW_S = 5
IDEMPOTENCY_TTL_S = 24 * 3600.0
IDEMPOTENCY_IN_FLIGHT_TTL_S = 5 * 60.0
IDEMPOTENCY_DOCS_LINK = "https://docs.novu.co/additional-resources/idempotency"
INTERNAL_ERROR_MESSAGE = "Internal server error, contact support and provide them with the errorId"

_COST: dict[RouteKind, int] = {"trigger": 1, "cancel": 1, "bulk": 100, "broadcast": 100}
#: The activity feed's page size when the request names none, and the most it accepts (Novu's ActivitiesRequestDto).
FEED_DEFAULT_LIMIT = 10
FEED_MAX_LIMIT = 50
_SERVICE_LEVELS = {60.0: "free", 240.0: "pro", 600.0: "team", 6000.0: "enterprise"}
# NestJS names some statuses differently from Python's http.HTTPStatus.
_REASONS = {
    400: "Bad Request",
    401: "Unauthorized",
    402: "Payment Required",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    413: "Payload Too Large",
    422: "Unprocessable Entity",
    429: "Too Many Requests",
    500: "Internal Server Error",
}
_SWEEP_EVERY = 1000
#: What Novu says with each configuration error the emulator can be told to answer (`config_error_status`).
_CONFIG_ERROR_MESSAGES = {401: "Unauthorized", 402: "Payment Required", 403: "Forbidden resource"}


@dataclass
class EmulatorConfig:
    """Behaviour switches, changeable at run time through ``POST /emulator/config``."""

    error_rate: float = 0.0
    """Fraction (0..1) of trigger/bulk/broadcast requests answered 500 before processing (no delivery)."""
    timeout_rate: float = 0.0
    """Fraction (0..1) of those requests that are processed but answered only after ``timeout_delay_s``, so
    the client times out without knowing the outcome (the case idempotency keys exist for)."""
    timeout_delay_s: float = 30.0
    """How long a "timed-out" response is held back."""
    latency_ms: int = 0
    """Added to every Novu API request while it is in flight (so a same-key request meanwhile gets 409)."""
    rate_limit_rps: float | None = None
    """Events-bucket refill rate in tokens per second (60 = Novu free tier); None or 0 turns limiting off."""
    idempotency: bool = True
    """Honour ``Idempotency-Key``; when False the header is ignored, as on orgs without the feature."""
    workflows: list[str] | None = None
    """Known workflow keys; an unknown ``name`` is ``workflow_not_found``. None accepts every name."""
    seed: int | None = None
    """Seed for the fault-injection random generator, for reproducible runs."""
    feed_delay_ms: int = 0
    """How long after processing an event appears in the activity feed (``GET /v1/notifications``): Novu answers a
    trigger once the job is queued, and its worker creates the feed entry when it runs the job."""
    feed_error_rate: float = 0.0
    """Fraction (0..1) of activity-feed requests answered 500 (the feed is down: outcomes stay unknown)."""
    config_error_status: int | None = None
    """401, 402 or 403: answer every events request with it once the key is accepted, before processing (no
    delivery), as Novu does when the plan limit has been reached (402) or the key may not use the route (403).
    None answers normally."""


@dataclass(frozen=True)
class ApiRequest:
    """One Novu API call, stripped of the HTTP framework."""

    kind: RouteKind
    method: str
    path: str
    """The request URL as Novu echoes it in error bodies (path and query)."""
    headers: Mapping[str, str]
    """Header names in lower case."""
    body: bytes = b""
    transaction_id: str | None = None
    """The path parameter of a cancel."""


@dataclass
class ApiReply:
    """What to answer: status, JSON body, headers, and how long to hold it back (timeout injection)."""

    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0


@dataclass
class _IdempotencyEntry:
    body_hash: str
    created: float
    status: int | None = None
    """None while the first request is still in flight."""
    body: Any = None


@dataclass
class _Bucket:
    tokens: float
    updated: float


@dataclass(frozen=True)
class _Recipient:
    subscriber_id: str | None
    topic_key: str | None = None


class _Rejected(Exception):
    """Raised inside request processing to answer with an error reply."""

    def __init__(self, reply: ApiReply) -> None:
        super().__init__(reply.status)
        self.reply = reply


def _now_iso() -> str:
    """JavaScript's ``Date.toISOString()`` format, which Novu uses for timestamps."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def error_body(status: int, path: str, message: Any, **extra: Any) -> dict[str, Any]:
    """Novu's unwrapped error shape; the SDK needs statusCode, timestamp and path to parse it."""
    body: dict[str, Any] = {"statusCode": status, "timestamp": _now_iso(), "path": path, "message": message}
    if status in _REASONS:
        body["error"] = _REASONS[status]
    body.update(extra)
    return body


def _error(status: int, path: str, message: Any, **extra: Any) -> ApiReply:
    return ApiReply(status, error_body(status, path, message, **extra))


def _validation_error(path: str, errors: Mapping[str, list[str]]) -> ApiReply:
    """A 422 in the newer ValidationErrorDto shape (the SDK parses that class only when `errors` exists)."""
    return _error(
        422, path, "Validation Error", errors={name: {"messages": msgs} for name, msgs in errors.items()}
    )


def _body_hash(body: Any) -> str:
    """Novu hashes the parsed body re-serialised: key order matters, whitespace does not."""
    canonical = json.dumps(body, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _json_size(value: Any) -> int:
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())


class NovuEmulator:
    """The emulator's state and rules, independent of the HTTP server that feeds it :class:`ApiRequest` s."""

    def __init__(self, secret_key: str | None = None, config: EmulatorConfig | None = None) -> None:
        self.secret_key = secret_key
        self.config = config if config is not None else EmulatorConfig()
        self._validate(self.config)
        self.events: list[dict[str, Any]] = []
        """Every accepted delivery, oldest first."""
        self._feed: dict[str, list[tuple[float, dict[str, Any]]]] = {}
        """Activity-feed entries by transactionId, each with the monotonic time it becomes visible."""
        self._rng = random.Random(self.config.seed)
        self._idempotency: dict[tuple[str, str], _IdempotencyEntry] = {}
        self._buckets: dict[str, _Bucket] = {}
        self._stores = 0
        self._reset_counters()

    # -- inspection and control

    def stats(self) -> dict[str, Any]:
        """Counters for tests and benchmarks; `tokens` counts tokens spent, even with limiting off."""
        return {
            "requests": self._requests,
            "tokens": self._tokens,
            "deliveries": len(self.events),
            "duplicate_deliveries": self._duplicates,
            "feed_lookups": self._feed_lookups,
            "status_codes": dict(sorted(self._status_codes.items())),
        }

    def reset(self, *, config: bool = False) -> None:
        """Forget deliveries, counters, idempotency keys and rate buckets (and the config if ``config``)."""
        self.events.clear()
        self._feed.clear()
        self._idempotency.clear()
        self._buckets.clear()
        self._reset_counters()
        if config:
            self.config = EmulatorConfig()
            self._rng = random.Random(None)

    def configure(self, changes: Mapping[str, Any]) -> EmulatorConfig:
        """Apply a partial config (as posted to /emulator/config); raises ValueError naming a bad field."""
        known = {f.name for f in fields(EmulatorConfig)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise ValueError(
                f"unknown config field(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
        merged = EmulatorConfig(**{**asdict(self.config), **changes})
        self._validate(merged)
        merged.latency_ms = int(merged.latency_ms)
        merged.feed_delay_ms = int(merged.feed_delay_ms)
        if merged.workflows is not None:
            merged.workflows = list(merged.workflows)
        if merged.rate_limit_rps != self.config.rate_limit_rps:
            self._buckets.clear()  # a new plan starts with a full bucket
        if "seed" in changes:
            self._rng = random.Random(merged.seed)
        self.config = merged
        return merged

    @staticmethod
    def _validate(cfg: EmulatorConfig) -> None:
        def number(name: str, value: Any, low: float, high: float = math.inf) -> None:
            if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
                raise ValueError(f"{name} must be a number in [{low}, {high}], got {value!r}")

        number("error_rate", cfg.error_rate, 0.0, 1.0)
        number("timeout_rate", cfg.timeout_rate, 0.0, 1.0)
        number("timeout_delay_s", cfg.timeout_delay_s, 0.0)
        number("latency_ms", cfg.latency_ms, 0.0)
        number("feed_delay_ms", cfg.feed_delay_ms, 0.0)
        number("feed_error_rate", cfg.feed_error_rate, 0.0, 1.0)
        if cfg.rate_limit_rps is not None:
            number("rate_limit_rps", cfg.rate_limit_rps, 0.0)
        if not isinstance(cfg.idempotency, bool):
            raise ValueError(f"idempotency must be true or false, got {cfg.idempotency!r}")
        if cfg.workflows is not None and (
            not isinstance(cfg.workflows, list | tuple) or not all(isinstance(w, str) for w in cfg.workflows)
        ):
            raise ValueError(f"workflows must be a list of strings or null, got {cfg.workflows!r}")
        if cfg.seed is not None and (isinstance(cfg.seed, bool) or not isinstance(cfg.seed, int)):
            raise ValueError(f"seed must be an integer or null, got {cfg.seed!r}")
        status = cfg.config_error_status
        if status is not None and (
            isinstance(status, bool) or not isinstance(status, int) or status not in _CONFIG_ERROR_MESSAGES
        ):
            raise ValueError(f"config_error_status must be 401, 402, 403 or null, got {status!r}")

    def _reset_counters(self) -> None:
        self._requests = 0
        self._tokens = 0
        self._duplicates = 0
        self._feed_lookups = 0
        self._status_codes: dict[str, int] = {}
        self._seen: set[tuple[str, str | None, str]] = set()

    # -- the API

    async def handle(self, request: ApiRequest) -> ApiReply:
        """Answer one Novu API call; the caller must hold the reply back for ``reply.delay_s`` seconds.

        Activity-feed reads count in ``feed_lookups`` only: ``requests`` and ``status_codes`` describe the events
        routes, the ones that can deliver."""
        if request.kind == "feed":
            return await self._dispatch(request)
        self._requests += 1
        reply = await self._dispatch(request)
        code = str(reply.status)
        self._status_codes[code] = self._status_codes.get(code, 0) + 1
        return reply

    async def _dispatch(self, req: ApiRequest) -> ApiReply:
        # Same order as Novu: body parser, auth guard, rate-limit and idempotency interceptors, handler.
        body: dict[str, Any] = {}
        if req.method == "POST" and req.body.strip():
            try:
                parsed = json.loads(req.body)
            except (ValueError, UnicodeDecodeError) as exc:
                return await self._answer(_error(400, req.path, f"Invalid JSON body: {exc}"))
            if not isinstance(parsed, dict):
                return await self._answer(_error(400, req.path, "Request body must be a JSON object"))
            body = parsed

        api_key, auth_failure = self._authenticate(req.headers.get("authorization"), req.path)
        if auth_failure is not None:
            return await self._answer(auth_failure)
        if req.kind == "feed":
            # Not an events route: Novu charges it to another bucket (docs/novu-contract.md "Rate limits").
            return await self._feed_page(req)
        refused = self.config.config_error_status
        if refused is not None:
            return await self._answer(_error(refused, req.path, _CONFIG_ERROR_MESSAGES[refused]))

        cost = _COST[req.kind]
        rate_headers, throttled = self._take_tokens(api_key, req.kind, cost, req.path)
        if throttled is not None:
            throttled.headers.update(rate_headers)
            return await self._answer(throttled)
        self._tokens += cost

        reply = await self._idempotent(req, body, api_key)
        reply.headers.update(rate_headers)
        return reply

    async def _answer(self, reply: ApiReply) -> ApiReply:
        """Answer without processing, after the configured latency."""
        await self._latency()
        return reply

    async def _latency(self) -> None:
        if self.config.latency_ms > 0:
            await asyncio.sleep(self.config.latency_ms / 1000)

    def _authenticate(self, header: str | None, path: str) -> tuple[str, ApiReply | None]:
        if not header:
            return "", _error(401, path, "Missing authorization header")
        scheme, _, key = header.partition(" ")
        if scheme != "ApiKey":
            return "", _error(401, path, f'Invalid authentication scheme: "{scheme}"')
        key = key.strip()
        if not key:
            return "", _error(401, path, "Unauthorized")
        if self.secret_key is not None and key != self.secret_key:
            return "", _error(401, path, "API Key not found")
        return key, None

    # -- the activity feed

    async def _feed_page(self, req: ApiRequest) -> ApiReply:
        """`GET /v1/notifications`: processed events, newest first, filtered by `transactionId` (repeatable) and
        `subscriberIds`, paginated by `page` (from 0) and `limit`."""
        await self._latency()
        self._feed_lookups += 1
        if self.config.feed_error_rate > 0 and self._rng.random() < self.config.feed_error_rate:
            return _error(500, req.path, INTERNAL_ERROR_MESSAGE, errorId=str(uuid.uuid4()))
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(req.path).query)
        try:
            page = int(query.get("page", ["0"])[0])
            limit = int(query.get("limit", [str(FEED_DEFAULT_LIMIT)])[0])
        except ValueError:
            return _validation_error(req.path, {"page": ["page and limit must be integers"]})
        if page < 0 or not 1 <= limit <= FEED_MAX_LIMIT:
            return _validation_error(req.path, {"limit": [f"limit must be between 1 and {FEED_MAX_LIMIT}"]})
        wanted = query.get("transactionId") or query.get("transactionId[]")
        subscribers = set(query.get("subscriberIds", []) + query.get("subscriberIds[]", []))
        now = time.monotonic()
        pools = [self._feed.get(tx, []) for tx in wanted] if wanted else list(self._feed.values())
        entries = [
            e
            for pool in pools
            for visible_at, e in pool
            if visible_at <= now and (not subscribers or e["subscriber"]["subscriberId"] in subscribers)
        ]
        entries.sort(key=lambda e: e["createdAt"], reverse=True)
        chunk = entries[page * limit : (page + 1) * limit]
        return ApiReply(
            200, {"data": chunk, "hasMore": len(entries) > (page + 1) * limit, "pageSize": limit, "page": page}
        )

    def _add_to_feed(self, workflow: str, subscriber_id: str | None, tx: str, created_at: str) -> None:
        entry = {
            "_id": uuid.uuid4().hex[:24],
            "transactionId": tx,
            "createdAt": created_at,
            "channels": [],
            "subscriber": {"subscriberId": subscriber_id},
            "template": {"name": workflow, "triggers": [{"identifier": workflow}]},
        }
        visible_at = time.monotonic() + self.config.feed_delay_ms / 1000
        self._feed.setdefault(tx, []).append((visible_at, entry))

    # -- rate limiting

    def _take_tokens(
        self, api_key: str, kind: RouteKind, cost: int, path: str
    ) -> tuple[dict[str, str], ApiReply | None]:
        """Spend `cost` tokens from this key's bucket: RateLimit-* headers, plus a 429 reply if short."""
        rps = self.config.rate_limit_rps
        if not rps:
            return {}, None
        limit = max(1, int(rps * RATE_WINDOW_S))
        burst = limit * 11 // 10
        refill = limit / RATE_WINDOW_S
        now = time.monotonic()
        bucket = self._buckets.setdefault(api_key, _Bucket(float(burst), now))
        bucket.tokens = min(float(burst), bucket.tokens + (now - bucket.updated) * refill)
        bucket.updated = now
        allowed = bucket.tokens >= cost
        if allowed:
            bucket.tokens -= cost
            # Until the bucket is full again.
            reset = math.ceil((burst - bucket.tokens) / refill)
        else:
            # Until this request could pass (at least 1 s, so clients never spin).
            reset = max(1, math.ceil((cost - bucket.tokens) / refill))
        level = _SERVICE_LEVELS.get(float(rps), "free")
        cost_name = "single" if cost == 1 else "bulk"
        headers = {
            "RateLimit-Limit": str(limit),
            "RateLimit-Remaining": str(int(bucket.tokens)),
            "RateLimit-Reset": str(reset),
            "RateLimit-Policy": (
                f'{limit};w={RATE_WINDOW_S};burst={burst};comment="token bucket";category="trigger";'
                f'cost="{cost_name}";serviceLevel="{level}"'
            ),
        }
        if allowed:
            return headers, None
        throttled = ApiReply(
            429,
            {"statusCode": 429, "timestamp": _now_iso(), "path": path, "message": "API rate limit exceeded"},
            {"Retry-After": str(reset)},
        )
        return headers, throttled

    # -- idempotency

    async def _idempotent(self, req: ApiRequest, body: dict[str, Any], api_key: str) -> ApiReply:
        """Run the request under Novu's Idempotency-Key rules (POST only, keys scoped by API key)."""
        key = req.headers.get("idempotency-key") or None
        if key is None or req.method != "POST" or not self.config.idempotency:
            return await self._run(req, body, key)
        if len(key) > MAX_IDEMPOTENCY_KEY_LENGTH:
            message = (
                f'idempotencyKey "{key}" has exceeded the maximum allowed length of '
                f"{MAX_IDEMPOTENCY_KEY_LENGTH} characters"
            )
            return await self._answer(_error(400, req.path, message))

        echo = {"Idempotency-Key": key}
        cache_key = (api_key, key)
        body_hash = _body_hash(body)
        now = time.monotonic()
        entry = self._idempotency.get(cache_key)
        if entry is not None:
            ttl = IDEMPOTENCY_IN_FLIGHT_TTL_S if entry.status is None else IDEMPOTENCY_TTL_S
            if now - entry.created > ttl:
                entry = None
        if entry is not None:
            if entry.status is None:
                message = (
                    f'Request with key "{key}" is currently being processed. Please retry after 1 second'
                )
                reply = _error(409, req.path, message)
                reply.headers.update(echo, **{"Retry-After": "1", "Link": IDEMPOTENCY_DOCS_LINK})
                return await self._answer(reply)
            if entry.body_hash != body_hash:
                reply = _error(
                    422, req.path, f'Request with key "{key}" is being reused for a different body'
                )
                reply.headers.update(echo, Link=IDEMPOTENCY_DOCS_LINK)
                return await self._answer(reply)
            replay = ApiReply(entry.status, entry.body, {**echo, "Idempotency-Replay": "true"})
            return await self._answer(replay)

        entry = _IdempotencyEntry(body_hash, now)
        self._idempotency[cache_key] = entry
        try:
            reply = await self._run(req, body, key)
            entry.status, entry.body = reply.status, reply.body
            if reply.status >= 500:
                entry.status = 500
                entry.body = error_body(500, req.path, INTERNAL_ERROR_MESSAGE, errorId=str(uuid.uuid4()))
            entry.created = time.monotonic()
            self._sweep()
        finally:
            # A cancelled request must not leave its key stuck "in flight".
            if entry.status is None and self._idempotency.get(cache_key) is entry:
                del self._idempotency[cache_key]
        reply.headers.update(echo)
        return reply

    def _sweep(self) -> None:
        """Drop expired keys now and then, so a long benchmark does not grow the cache forever."""
        self._stores += 1
        if self._stores % _SWEEP_EVERY:
            return
        now = time.monotonic()
        expired = [
            k
            for k, e in self._idempotency.items()
            if now - e.created > (IDEMPOTENCY_IN_FLIGHT_TTL_S if e.status is None else IDEMPOTENCY_TTL_S)
        ]
        for k in expired:
            del self._idempotency[k]

    # -- processing

    async def _run(self, req: ApiRequest, body: dict[str, Any], idempotency_key: str | None) -> ApiReply:
        """Latency, injected faults, then the route itself."""
        await self._latency()
        if req.kind == "cancel":
            # Deliveries here are immediate, so there is never a delayed or digest job left to cancel.
            return ApiReply(200, {"data": False})
        cfg = self.config
        if cfg.error_rate > 0 and self._rng.random() < cfg.error_rate:
            return _error(500, req.path, INTERNAL_ERROR_MESSAGE, errorId=str(uuid.uuid4()))
        timed_out = cfg.timeout_rate > 0 and self._rng.random() < cfg.timeout_rate
        try:
            if req.kind == "bulk":
                reply = self._bulk(req, body, idempotency_key)
            else:
                reply = self._single(req, body, idempotency_key)
        except _Rejected as rejected:
            reply = rejected.reply
        if timed_out:
            reply.delay_s = cfg.timeout_delay_s
        return reply

    def _single(self, req: ApiRequest, body: dict[str, Any], idempotency_key: str | None) -> ApiReply:
        size = len(req.body)
        if size > MAX_PAYLOAD_BYTES:
            raise _Rejected(
                _error(
                    413,
                    req.path,
                    f"Payload size ({size} bytes) exceeds maximum allowed size of {MAX_PAYLOAD_BYTES} bytes "
                    "(512KB). Note: Attachments are excluded from this limit.",
                )
            )
        broadcast = req.kind == "broadcast"
        errors, recipients = self._check_event(body, "", needs_recipients=not broadcast)
        if errors:
            raise _Rejected(_validation_error(req.path, errors))
        if not self._workflow_known(body["name"]):
            raise _Rejected(_error(422, req.path, "workflow_not_found"))
        if broadcast:
            recipients = [_Recipient(None)]
        return ApiReply(201, {"data": self._deliver(body, recipients, idempotency_key, broadcast=broadcast)})

    def _bulk(self, req: ApiRequest, body: dict[str, Any], idempotency_key: str | None) -> ApiReply:
        events = body.get("events")
        if not isinstance(events, list):
            raise _Rejected(_validation_error(req.path, {"events": ["events must be an array"]}))
        if not events:
            raise _Rejected(
                _validation_error(req.path, {"events": ["events must contain at least 1 elements"]})
            )
        if len(events) > MAX_BULK_EVENTS:
            message = f"events must contain no more than {MAX_BULK_EVENTS} elements"
            raise _Rejected(_validation_error(req.path, {"events": [message]}))
        errors: dict[str, list[str]] = {}
        checked: list[list[_Recipient]] = []
        for i, event in enumerate(events):
            if not isinstance(event, dict):
                errors[f"events.{i}"] = ["each value in events must be an object"]
                checked.append([])
                continue
            event_errors, recipients = self._check_event(event, f"events.{i}.", needs_recipients=True)
            errors.update(event_errors)
            checked.append(recipients)
        if errors:
            raise _Rejected(_validation_error(req.path, errors))
        for i, event in enumerate(events):
            size = _json_size(event)
            if size > MAX_PAYLOAD_BYTES:
                raise _Rejected(
                    _error(
                        413,
                        req.path,
                        f'Event at index {i} (workflow: "{event["name"]}") has payload size ({size} bytes) '
                        f"exceeds maximum allowed size of {MAX_PAYLOAD_BYTES} bytes (512KB). "
                        "Note: Attachments are excluded from this limit.",
                    )
                )
        results: list[dict[str, Any]] = []
        for event, recipients in zip(events, checked, strict=True):
            if self._workflow_known(event["name"]):
                results.append(self._deliver(event, recipients, idempotency_key, broadcast=False))
            else:
                # Novu handles bulk events one by one and turns an exception into an error entry.
                results.append({"acknowledged": True, "status": "error", "error": ["workflow_not_found"]})
        return ApiReply(201, {"data": results})

    def _workflow_known(self, name: str) -> bool:
        return self.config.workflows is None or name in self.config.workflows

    @staticmethod
    def _check_event(
        event: Mapping[str, Any], prefix: str, *, needs_recipients: bool
    ) -> tuple[dict[str, list[str]], list[_Recipient]]:
        """Field validation with class-validator's messages, keyed by field path."""
        errors: dict[str, list[str]] = {}
        name = event.get("name")
        if not isinstance(name, str):
            errors[f"{prefix}name"] = [f"{prefix}name must be a string", f"{prefix}name should not be empty"]
        elif not name:
            errors[f"{prefix}name"] = [f"{prefix}name should not be empty"]
        for obj in ("payload", "overrides"):
            if event.get(obj) is not None and not isinstance(event[obj], dict):
                errors[f"{prefix}{obj}"] = [f"{prefix}{obj} must be an object"]
        tx = event.get("transactionId")
        if tx is not None and not isinstance(tx, str):
            errors[f"{prefix}transactionId"] = [f"{prefix}transactionId must be a string"]
        recipients: list[_Recipient] = []
        if needs_recipients:
            to_errors, recipients = _parse_recipients(event.get("to"), f"{prefix}to")
            if to_errors:
                errors[f"{prefix}to"] = to_errors
        return errors, recipients

    def _deliver(
        self,
        event: Mapping[str, Any],
        recipients: list[_Recipient],
        idempotency_key: str | None,
        *,
        broadcast: bool,
    ) -> dict[str, Any]:
        """Record one delivery per recipient and return Novu's TriggerEventResponse."""
        workflow: str = event["name"]
        tx: str = event.get("transactionId") or str(uuid.uuid4())
        payload = event.get("payload")
        overrides = event.get("overrides")
        received_at = _now_iso()
        for recipient in recipients:
            record: dict[str, Any] = {
                "workflow": workflow,
                "subscriberId": recipient.subscriber_id,
                "transactionId": tx,
                "idempotencyKey": idempotency_key,
                "payload": payload if payload is not None else {},
                "receivedAt": received_at,
            }
            if overrides is not None:
                record["overrides"] = overrides
            if recipient.topic_key is not None:
                record["topicKey"] = recipient.topic_key
            if broadcast:
                record["broadcast"] = True
            self._add_to_feed(workflow, recipient.subscriber_id, tx, received_at)
            identity = (workflow, recipient.subscriber_id or recipient.topic_key, tx)
            if identity in self._seen:
                self._duplicates += 1
            self._seen.add(identity)
            self.events.append(record)
        return {"acknowledged": True, "status": "processed", "transactionId": tx}


def _parse_recipients(to: Any, field_name: str) -> tuple[list[str], list[_Recipient]]:
    """`to` is a subscriberId, a SubscriberPayload, a TopicPayload, or a list of those (at most 100)."""
    if to is None:
        return [f"{field_name} should not be null or undefined"], []
    items = to if isinstance(to, list) else [to]
    if not items:
        return [f"{field_name} should not be empty"], []
    if len(items) > MAX_RECIPIENTS:
        return [f"{field_name} must contain no more than {MAX_RECIPIENTS} elements"], []
    recipients: list[_Recipient] = []
    for item in items:
        if isinstance(item, str) and item:
            recipients.append(_Recipient(item))
        elif isinstance(item, dict) and isinstance(item.get("topicKey"), str) and item["topicKey"]:
            recipients.append(_Recipient(None, item["topicKey"]))
        elif isinstance(item, dict) and isinstance(item.get("subscriberId"), str) and item["subscriberId"]:
            recipients.append(_Recipient(item["subscriberId"]))
        else:
            message = (
                f"each value in {field_name} must be a subscriberId string, an object with a subscriberId, "
                "or a topic object with a topicKey"
            )
            return [message], []
    return [], recipients


# -- HTTP


def _request_path(request: Request) -> str:
    query = request.url.query
    return request.url.path + (f"?{query}" if query else "")


async def _hold_back(request: Request, seconds: float) -> None:
    """Sleep before answering, but stop early once the client has hung up (nobody is left to answer)."""

    async def disconnected() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    watcher = asyncio.ensure_future(disconnected())
    try:
        await asyncio.wait({watcher}, timeout=seconds)
    finally:
        watcher.cancel()


async def _read_json_object(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        parsed = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise HTTPException(400, f"Invalid JSON body: {exc}") from exc
    if not isinstance(parsed, dict):
        raise HTTPException(400, "Request body must be a JSON object")
    return parsed


def create_app(emulator: NovuEmulator) -> Starlette:
    """The Starlette app: Novu's events routes under /v1 plus the unauthenticated /emulator control API."""

    def api(kind: RouteKind) -> Any:
        async def endpoint(request: Request) -> Response:
            api_request = ApiRequest(
                kind=kind,
                method=request.method,
                path=_request_path(request),
                headers={k.lower(): v for k, v in request.headers.items()},
                body=await request.body(),
                transaction_id=request.path_params.get("transactionId"),
            )
            reply = await emulator.handle(api_request)
            if reply.delay_s > 0:
                await _hold_back(request, reply.delay_s)
            return JSONResponse(reply.body, reply.status, headers=reply.headers)

        return endpoint

    async def events(request: Request) -> Response:
        return JSONResponse(list(emulator.events))

    async def stats(request: Request) -> Response:
        return JSONResponse(emulator.stats())

    async def get_config(request: Request) -> Response:
        return JSONResponse(asdict(emulator.config))

    async def post_config(request: Request) -> Response:
        changes = await _read_json_object(request)
        try:
            config = emulator.configure(changes)
        except (ValueError, TypeError) as exc:
            raise HTTPException(400, str(exc)) from exc
        return JSONResponse(asdict(config))

    async def reset(request: Request) -> Response:
        options = await _read_json_object(request)
        emulator.reset(config=options.get("config") is True)
        return JSONResponse({"reset": True, "config": asdict(emulator.config)})

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        message = (
            exc.detail if exc.status_code in (400, 422) else f"Cannot {request.method} {request.url.path}"
        )
        return JSONResponse(
            error_body(exc.status_code, _request_path(request), message), exc.status_code, headers=exc.headers
        )

    routes = [
        Route("/v1/events/trigger", api("trigger"), methods=["POST"]),
        Route("/v1/events/trigger/bulk", api("bulk"), methods=["POST"]),
        Route("/v1/events/trigger/broadcast", api("broadcast"), methods=["POST"]),
        Route("/v1/events/trigger/{transactionId}", api("cancel"), methods=["DELETE"]),
        Route("/v1/notifications", api("feed"), methods=["GET"]),
        Route("/emulator/events", events, methods=["GET"]),
        Route("/emulator/stats", stats, methods=["GET"]),
        Route("/emulator/config", get_config, methods=["GET"]),
        Route("/emulator/config", post_config, methods=["POST"]),
        Route("/emulator/reset", reset, methods=["POST"]),
        Route("/emulator/health", health, methods=["GET"]),
    ]
    return Starlette(routes=routes, exception_handlers={HTTPException: http_error})


# -- running it


def _bind(host: str, port: int) -> socket.socket:
    """Bind before uvicorn starts, so port 0 yields a known free port and the URL is right from the start."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY only on sockets that say so, and without it every
    # response waits ~40 ms for a delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def _url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


def _uvicorn_config(emulator: NovuEmulator, log_level: str) -> uvicorn.Config:
    return uvicorn.Config(
        create_app(emulator),
        log_level=log_level,
        access_log=False,
        lifespan="off",
        # Timed-out responses may be parked for timeout_delay_s; do not let them hold up shutdown.
        timeout_graceful_shutdown=1,
    )


class EmulatorServer:
    """Runs the emulator with uvicorn in a background thread (for tests, `xnovu dev`, bench)."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        secret_key: str | None = None,
        config: EmulatorConfig | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.emulator = NovuEmulator(secret_key=secret_key, config=config)
        self.url = ""
        """Base URL such as ``http://127.0.0.1:8787``; set by :meth:`start`."""
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None

    def start(self, timeout_s: float = 10.0) -> EmulatorServer:
        """Start serving and return once connections are accepted."""
        if self._thread is not None:
            raise RuntimeError("emulator server already started")
        sock = _bind(self.host, self.port)
        self.url = _url(sock)
        self.port = sock.getsockname()[1]
        server = uvicorn.Server(_uvicorn_config(self.emulator, "warning"))
        thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name="novu-emulator", daemon=True
        )
        self._server, self._thread = server, thread
        thread.start()
        deadline = time.monotonic() + timeout_s
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                server.should_exit = True
                thread.join(timeout=2)
                sock.close()
                self._server = self._thread = None
                raise RuntimeError(f"Novu emulator did not start on {self.url}")
            time.sleep(0.01)
        self._socket = sock
        return self

    def stop(self) -> None:
        """Stop serving and wait for the thread; safe to call twice."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None or thread is None:
            return
        server.should_exit = True
        thread.join(timeout=10)
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    def __enter__(self) -> EmulatorServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def serve(host: str, port: int, secret_key: str | None) -> None:
    """Foreground server for `xnovu emulator` (blocking, Ctrl-C stops it); logs one line with the URL."""
    sock = _bind(host, port)
    emulator = NovuEmulator(secret_key=secret_key)
    auth = "the configured secret key" if secret_key is not None else "any non-empty API key"
    logger.info("Novu emulator listening on %s (accepts %s; control API under /emulator)", _url(sock), auth)
    try:
        uvicorn.Server(_uvicorn_config(emulator, "warning")).run(sockets=[sock])
    except KeyboardInterrupt:
        # uvicorn shuts down gracefully, then re-raises the captured Ctrl-C; that is a normal stop here.
        logger.info("Novu emulator stopped")
    finally:
        sock.close()
