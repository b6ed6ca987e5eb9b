"""Async Novu events client: triggers one workflow for many recipients, at most once each (I2; docs/design.md
"The invariants", "Novu calls").

Every problem with Novu becomes an :class:`EventOutcome`, never an exception, so one bad recipient cannot
sink a batch (I5):

    acknowledged   2xx with status "processed": Novu queued it; never send it again
    transient      timeout, connection error, 408, 409, 429, 5xx: safe to retry later (honour retry_after_s)
    permanent      other 4xx, or 2xx with a status other than "processed": retrying cannot help
    config         401, 402, 403 (or an unusable NOVU_API_URL): every send would fail alike, fail loudly
    unsent         never sent in this call: the caller's deadline passed or its claim was lost (see SendControl)
    unknown        Novu may have processed it (no answer, a cut connection, 408/502/503/504) and its activity feed
                   could not tell: never resent until the feed knows (docs/novu-contract.md "Unknown outcomes")

Only HTTP and network problems are classified. A failure of the caller's own hooks (the token budget, the claim
fence, the ledger write: all database calls) is raised as it is, and stops every sibling request of the call, so a
database timeout is never mistaken for a Novu timeout and no request goes out after the attempt has given up.

Idempotency (docs/novu-contract.md "Idempotency"): each request carries a key derived from its events' transaction
ids and a generation. After an ambiguous outcome (no response, 409 in flight, 502/504 from a gateway) the same key is
sent again, so Novu replays the first result instead of running the workflow twice. After a definite answer
Novu caches that answer for 24 h, so the generation is bumped to get a fresh attempt, not a replayed error.

Unknown outcomes (docs/novu-contract.md "Unknown outcomes"): where idempotency is off (Novu Cloud's default) the key
protects nothing, so a request that may have been processed (no answer, a cut connection, 408/502/503/504) is never
retried blindly: after `settle_s` the client asks Novu's activity feed about each of its events
(`GET /v1/notifications?transactionId=…`) and resends only those Novu does not know.
"""

from __future__ import annotations

import asyncio
import dataclasses
import email.utils
import hashlib
import json
import logging
import math
import time
from collections.abc import Awaitable, Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from types import TracebackType
from typing import Any, Literal, Self

import httpx

from xnovu.errors import NOVU_CONFIG_STATUSES, NovuConfigurationError
from xnovu.novu.ratelimit import TokenBudget
from xnovu.tracing import Tracing

__all__ = [
    "BULK_MAX_EVENTS",
    "EventKind",
    "EventOutcome",
    "NovuClient",
    "NovuConfigurationError",
    "RecipientEvent",
    "SendControl",
    "classify",
    "idempotency_key_for",
    "plan_chunks",
    "transaction_id_for",
]

logger = logging.getLogger(__name__)

#: What Novu did with one event (docs/novu-contract.md); not the `xnovu.core.models.Outcome` of a whole attempt.
EventKind = Literal["acknowledged", "transient", "permanent", "config", "unsent", "unknown"]
ChunkKind = Literal["bulk", "single"]

#: Novu accepts 1..100 events per bulk request.
BULK_MAX_EVENTS = 100
#: Tokens charged by Novu's `events` bucket (docs/novu-contract.md "Rate limits").
SINGLE_COST = 1
BULK_COST = 100

TRIGGER_PATH = "/v1/events/trigger"
FEED_PATH = "/v1/notifications"
#: Feed look-ups under way at once per call (they are not events-bucket requests, but share Novu's global limit).
FEED_CONCURRENCY = 10
BULK_PATH = "/v1/events/trigger/bulk"
DOCTOR_PROBE_PATH = "/v1/events/trigger/xnovu-doctor-probe"

_TRANSIENT_STATUSES = frozenset({408, 409, 429})
_CONFIG_STATUSES = frozenset(NOVU_CONFIG_STATUSES)
# Responses that say nothing about an earlier request under the same key, so the key is kept: the in-flight 409;
# 429, which Novu's rate limiter answers before its idempotency layer runs (never cached under the key); 408 and
# gateway/proxy errors produced in front of Novu (502/503/504). Rotating after one of these, following a timeout
# whose request Novu did process, would run the workflow twice. Only answers that come from behind the
# idempotency layer (2xx, 500, other 4xx: cached for 24 h) make a fresh key safe and necessary.
_AMBIGUOUS_STATUSES = frozenset({408, 409, 429, 502, 503, 504})
# Answers after which Novu may have processed the request or not, and says nothing of which (a timeout in front of
# it, a gateway that lost the upstream answer): like no answer at all, the outcome is looked up in the feed before
# anything is sent again. 409 (same key in flight) and 429 (rate limiter, before processing) are not: the first
# exists only with idempotency on, where resending the key is safe, and the second was never processed.
_UNKNOWN_STATUSES = frozenset({408, 502, 503, 504})
_UNKNOWN_ERROR = (
    "Novu may have processed the event ({why}) and its activity feed could not tell; it is looked up again "
    "before it is ever sent again"
)
_MAX_ERROR_CHARS = 500
_MAX_RETRY_AFTER_S = 3600.0

_NOT_PROCESSED_REASONS = {
    "trigger_not_active": "the workflow is not active in Novu",
    "no_workflow_steps_defined": "the workflow has no steps in Novu",
    "no_workflow_active_steps_defined": "the workflow has no active steps in Novu",
    "no_tenant_found": "the tenant was not found in Novu",
    "invalid_recipients": "Novu rejected the recipients",
    "error": "Novu failed to process the event",
}


def _user_agent() -> str:
    try:
        version = metadata.version("xnovu")
    except metadata.PackageNotFoundError:
        version = "0.1.0"
    return f"xnovu/{version}"


def transaction_id_for(notification_id: int, recipient_id: str) -> str:
    """Deterministic Novu transactionId, so a retry of one recipient is recognisable (and cancellable)."""
    return f"xnovu-{notification_id}-{recipient_id}"


def idempotency_key_for(transaction_ids: Sequence[str], generation: int) -> str:
    """Deterministic Idempotency-Key for a request carrying these events (in order) at this key generation.

    Hashed so it stays far below Novu's 255-character limit whatever the number of events.
    """
    material = "\n".join(transaction_ids) + f"#g{generation}"
    return "xnovu-" + hashlib.sha256(material.encode("utf-8")).hexdigest()[:48]


@dataclass(frozen=True)
class RecipientEvent:
    """One recipient to trigger."""

    recipient_id: str
    """Novu subscriberId (the recipient uuid as text)."""
    transaction_id: str
    """From :func:`transaction_id_for`."""
    key_generation: int = 0
    """Bumped after a definite error response so Novu's 24 h error cache is not replayed."""


@dataclass(frozen=True)
class EventOutcome:
    """What happened to one :class:`RecipientEvent`."""

    recipient_id: str
    transaction_id: str
    outcome: EventKind
    http_status: int | None
    """None for timeouts and connection errors (and events never sent)."""
    error: str | None
    """One readable sentence; never contains the API key."""
    retry_after_s: float | None
    """Novu's Retry-After, when it sent one."""
    idempotency_key: str
    """The key of the last request that carried this event (or would have)."""
    next_key_generation: int
    """Generation to store for the next attempt: unchanged after ack or an ambiguous outcome, +1 otherwise."""
    novu_transaction_id: str | None
    """The transactionId Novu echoed, when acknowledged."""


@dataclass(frozen=True)
class SendControl:
    """How a caller steers one :meth:`NovuClient.trigger` call that may be long (thousands of recipients).

    The hooks run outside the HTTP classification: whatever they raise propagates and cancels the other requests
    of the call.
    """

    before_request: Callable[[Sequence[RecipientEvent]], Awaitable[bool]] | None = None
    """Called with the request's events after its tokens are granted and right before it is sent; False means "the
    claim on this notification is gone (recovered, retracted, unpublished, or a newer piece of the attempt began)":
    the request and every later one are not sent."""
    on_outcomes: Callable[[Sequence[EventOutcome]], Awaitable[None]] | None = None
    """Called with each request's outcomes as soon as they are known, so progress is durable request by request
    (and with the `unsent` outcomes of every request that was not sent)."""
    deadline: float | None = None
    """`time.monotonic()` after which no new request starts (those events come back `unsent`); requests already
    under way finish."""
    urgency: int = 0
    """The notification's urgency (xnovu/core/priority.py): a more urgent request gets tokens first."""
    enterprise: str | None = None
    """The notification's enterprise: within an urgency, enterprises share the token budget by weight."""
    notification: Hashable | None = None
    """The notification these requests belong to: within an enterprise, notifications take turns at the token budget
    request by request, so one notification's many requests do not keep the others waiting (docs/priority.md "The
    token budget"). None: they share one turn with every other request without one."""


def plan_chunks(n_events: int) -> list[tuple[ChunkKind, int]]:
    """Split `n_events` into requests costing the fewest tokens, then the fewest requests (docs/design.md "Novu calls").

    A bulk costs 100 tokens whatever its size, so only a full 100 is worth it (same tokens, 100x fewer
    requests); a remainder r < 100 is cheaper as r singles.
    """
    full, rest = divmod(max(n_events, 0), BULK_MAX_EVENTS)
    bulk: tuple[ChunkKind, int] = ("bulk", BULK_MAX_EVENTS)
    single: tuple[ChunkKind, int] = ("single", 1)
    return [bulk] * full + [single] * rest


def _message_text(body: Any) -> str:
    """Readable text from a Novu error body (message may be a string, a list or an object)."""
    if isinstance(body, Mapping):
        parts: list[str] = []
        message = body.get("message")
        if isinstance(message, str):
            parts.append(message)
        elif isinstance(message, list):
            parts.append("; ".join(str(m) for m in message))
        elif message is not None:
            parts.append(json.dumps(message, sort_keys=True, default=str))
        errors = body.get("errors")
        if isinstance(errors, Mapping):  # 422 field validation: {field: {messages: [...]}}
            for field, detail in errors.items():
                msgs = detail.get("messages") if isinstance(detail, Mapping) else detail
                text = "; ".join(str(m) for m in msgs) if isinstance(msgs, list) else str(msgs)
                parts.append(f"{field}: {text}")
        elif isinstance(errors, list):  # 400 payload validation: [{field, message}]
            for item in errors:
                if isinstance(item, Mapping):
                    parts.append(f"{item.get('field', '?')}: {item.get('message', '')}".strip())
                else:
                    parts.append(str(item))
        elif isinstance(body.get("error"), str) and not parts:
            parts.append(body["error"])
        text = "; ".join(p for p in parts if p)
    elif isinstance(body, str):
        text = body.strip()
    elif body is None:
        text = ""
    else:
        text = json.dumps(body, default=str)
    text = " ".join(text.split())
    if len(text) > _MAX_ERROR_CHARS:
        text = text[: _MAX_ERROR_CHARS - 3] + "..."
    return text


def _with_detail(prefix: str, detail: str) -> str:
    return f"{prefix}: {detail}" if detail else prefix


def _classify_entry(entry: Any) -> tuple[EventKind, str | None, str | None]:
    """Classify one accepted trigger result ({acknowledged, status, error?, transactionId?})."""
    if not isinstance(entry, Mapping):
        return "permanent", "Novu returned an unexpected response body, so the event is not retried", None
    status = entry.get("status")
    if status == "processed":
        tx = entry.get("transactionId")
        return "acknowledged", None, tx if isinstance(tx, str) else None
    errors = entry.get("error")
    if isinstance(errors, list):
        detail = "; ".join(str(e) for e in errors)
    else:
        detail = str(errors) if errors else ""
    reason = _NOT_PROCESSED_REASONS.get(str(status), "Novu did not process the event")
    text = f"{reason} (status {status})"
    return "permanent", _with_detail(text, detail), None


def classify(status_code: int, body: Any) -> tuple[EventKind, str | None]:
    """Classify a single-trigger response by HTTP status first (body shapes vary across Novu versions)."""
    if 200 <= status_code < 300:
        data = body.get("data", body) if isinstance(body, Mapping) else body
        outcome, error, _ = _classify_entry(data)
        return outcome, error
    detail = _message_text(body)
    if status_code in _CONFIG_STATUSES:
        if status_code == 402:
            # Fixed in Novu's billing (a larger plan, or the next period), not by another key.
            text = "the Novu plan limit has been reached (HTTP 402); upgrade the Novu plan or wait for its next period"
        else:
            text = f"Novu rejected the API key (HTTP {status_code}); check NOVU_SECRET_KEY"
        return "config", _with_detail(text, detail)
    if status_code in _TRANSIENT_STATUSES or status_code >= 500:
        return "transient", _with_detail(f"Novu is temporarily unavailable (HTTP {status_code})", detail)
    if 300 <= status_code < 400 or status_code in (404, 405):
        # The events routes always exist on Novu: a missing route means NOVU_API_URL points elsewhere, and every
        # row would fail alike, so this is configuration, not a reason to dead-letter rows.
        return "config", f"Novu answered HTTP {status_code} for the events API; check NOVU_API_URL"
    return "permanent", _with_detail(f"Novu rejected the event (HTTP {status_code})", detail)


def _parse_retry_after(headers: httpx.Headers) -> float | None:
    """Retry-After as seconds (delta-seconds or HTTP-date; `retry-after-ms` too), clamped to [0, 1 h]."""
    raw_ms = headers.get("retry-after-ms")
    if raw_ms is not None:
        try:
            value = float(raw_ms) / 1000.0
        except ValueError:
            value = math.nan
        if math.isfinite(value):
            return min(max(value, 0.0), _MAX_RETRY_AFTER_S)
    raw = headers.get("retry-after")
    if raw is None:
        return None
    raw = raw.strip()
    try:
        value = float(raw)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(raw)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        value = (when - datetime.now(UTC)).total_seconds()
    if not math.isfinite(value):
        return None
    return min(max(value, 0.0), _MAX_RETRY_AFTER_S)


@dataclass(frozen=True)
class _EntryResult:
    outcome: EventKind
    error: str | None
    novu_transaction_id: str | None = None


@dataclass(frozen=True)
class _Attempt:
    """One HTTP attempt for one chunk."""

    status: int | None
    entries: list[_EntryResult]
    retry_after_s: float | None
    ambiguous: bool
    """True when the answer says nothing about an earlier request under the same key: the same key is sent again."""
    unknown: bool = False
    """True when Novu may have processed the request without our seeing the answer: resolved through the feed."""

    @property
    def transient(self) -> bool:
        return any(e.outcome == "transient" for e in self.entries)

    @property
    def config(self) -> _EntryResult | None:
        return next((e for e in self.entries if e.outcome == "config"), None)


class _CallState:
    """Shared by the chunks of one `trigger` call."""

    def __init__(self, concurrency: int, control: SendControl) -> None:
        self.slots = asyncio.Semaphore(max(1, concurrency))
        self.control = control
        # The first request goes alone: with a bad key, one 401 settles the whole call.
        self.first_response = asyncio.Event()
        self.config_error: tuple[int | None, str] | None = None
        self.stopped: str | None = None
        """Why no further request may start (the claim was lost); None while sending may go on."""

    def unsent_reason(self) -> str | None:
        """Why a request that has not started yet must not start, or None."""
        if self.stopped is not None:
            return self.stopped
        deadline = self.control.deadline
        if deadline is not None and time.monotonic() >= deadline:
            return "not sent in this piece of the attempt (time budget used); the next piece sends it"
        return None


class NovuClient:
    """Novu events API over httpx: quick retries, a shared token budget, deterministic idempotency keys."""

    def __init__(
        self,
        api_url: str,
        secret_key: str,
        *,
        timeout_s: float = 10.0,
        budget: TokenBudget | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        max_connections: int = 100,
        quick_retries: int = 2,
        max_retry_sleep_s: float = 5.0,
        on_response: Callable[[int | None, float], None] | None = None,
        tracing: Tracing | None = None,
        settle_s: float = 2.0,
        on_unknown: Callable[[int], None] | None = None,
    ) -> None:
        self._api_url = api_url.rstrip("/")
        self._tracing = tracing or Tracing.off()
        self._secret = secret_key
        self._timeout_s = timeout_s
        self._budget = budget
        self._quick_retries = max(0, quick_retries)
        self._max_retry_sleep_s = max(0.0, max_retry_sleep_s)
        self._on_response = on_response
        self.settle_s = max(0.0, settle_s)
        """How long Novu may take, after answering (or not), to show a processed event in its activity feed."""
        self._on_unknown = on_unknown
        auth = secret_key if secret_key.startswith("ApiKey ") else f"ApiKey {secret_key}"
        self._http = httpx.AsyncClient(
            base_url=self._api_url,
            headers={
                "Authorization": auth,
                "Content-Type": "application/json",
                "Accept": "application/json",
                "User-Agent": _user_agent(),
            },
            timeout=httpx.Timeout(timeout_s),
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
            transport=transport,
            follow_redirects=False,
        )

    def __repr__(self) -> str:
        return f"NovuClient(api_url={self._api_url!r})"

    @property
    def timeout_s(self) -> float:
        """The bound on one Novu request: after it, a request of a live worker is no longer on the wire."""
        return self._timeout_s

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close pooled connections."""
        await self._http.aclose()

    def _redact(self, text: str) -> str:
        secret = self._secret.removeprefix("ApiKey ").strip()
        return text.replace(secret, "***") if len(secret) >= 4 else text

    def _report(self, status: int | None, seconds: float) -> None:
        if self._on_response is None:
            return
        try:
            self._on_response(status, seconds)
        except Exception:  # metrics must never break a send
            logger.exception("on_response callback failed")

    async def _request(
        self, method: str, path: str, *, content: bytes | None, idempotency_key: str | None
    ) -> httpx.Response:
        """One HTTP attempt bounded by `timeout_s` overall; reports to `on_response`. Tokens are the caller's."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        started = time.perf_counter()
        status: int | None = None
        try:
            response = await self._send(self._http.build_request(method, path, content=content, headers=headers))
            status = response.status_code
            return response
        finally:
            self._report(status, time.perf_counter() - started)

    async def _send(self, request: httpx.Request) -> httpx.Response:
        """Send and read one request within `timeout_s`, as one client span when tracing is on.

        The span has the method, the URL without user info and the status, never a header (the key travels in
        Authorization); the trace context goes out as `traceparent`, so a traced proxy or server continues it.
        """
        url = request.url.copy_with(username=None, password=None)
        attributes = {
            "http.request.method": request.method,
            "url.full": str(url),
            "server.address": url.host,
            "server.port": url.port or (443 if url.scheme == "https" else 80),
        }
        with self._tracing.client_span(request.method, attributes) as span:
            self._tracing.inject(request.headers)
            async with asyncio.timeout(self._timeout_s):
                response = await self._http.send(request)
                await response.aread()
            span.set_attribute("http.response.status_code", response.status_code)
            if response.status_code >= 400:
                span.fail(str(response.status_code))
            return response

    async def _take_tokens(self, cost: int, deadline: float | None, control: SendControl | None = None) -> bool:
        """Wait for `cost` tokens (in the turn of `control`'s urgency, enterprise and notification); False if
        `deadline` passed first (nothing is sent then)."""
        if self._budget is None:
            return True
        c = control or SendControl()
        if deadline is None:
            await self._budget.acquire(
                cost, urgency=c.urgency, enterprise=c.enterprise, notification=c.notification
            )
            return True
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        try:
            async with asyncio.timeout(remaining):
                await self._budget.acquire(
                    cost, urgency=c.urgency, enterprise=c.enterprise, notification=c.notification
                )
        except TimeoutError:
            return False
        return True

    async def trigger(
        self,
        *,
        workflow_key: str,
        payload: Mapping[str, Any],
        overrides: Mapping[str, Any] | None,
        events: Sequence[RecipientEvent],
        concurrency: int = 10,
        control: SendControl | None = None,
    ) -> list[EventOutcome]:
        """Trigger `workflow_key` for every event; one outcome per event, in input order.

        Full 100-event chunks go through the bulk endpoint, the rest as single triggers, with up to
        `concurrency` requests in flight. HTTP and network problems become outcomes; an exception from a
        `control` hook (or the token budget) cancels every other request of the call and propagates.
        """
        if not events:
            return []
        state = _CallState(concurrency, control or SendControl())
        chunks: list[tuple[ChunkKind, Sequence[RecipientEvent]]] = []
        start = 0
        for kind, size in plan_chunks(len(events)):
            chunks.append((kind, events[start : start + size]))
            start += size
        # A TaskGroup, not gather: when one chunk fails (its ledger write, the fence), the others are cancelled
        # instead of sending on after the attempt has given up.
        try:
            async with asyncio.TaskGroup() as group:
                tasks = [
                    group.create_task(
                        self._run_chunk(i, kind == "bulk", chunk, workflow_key, payload, overrides, state)
                    )
                    for i, (kind, chunk) in enumerate(chunks)
                ]
        except BaseExceptionGroup as failed:
            # The first failure is the cause (the others are the same database outage seen by siblings): raise it
            # as itself, so callers classify it (transient database error, configuration) like any other.
            raise failed.exceptions[0] from None
        return [outcome for task in tasks for outcome in task.result()]

    def _event_body(
        self,
        workflow_key: str,
        payload: Mapping[str, Any],
        overrides: Mapping[str, Any] | None,
        event: RecipientEvent,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "name": workflow_key,
            "to": {"subscriberId": event.recipient_id},
            "payload": dict(payload),
            "transactionId": event.transaction_id,
        }
        if overrides:
            body["overrides"] = dict(overrides)
        return body

    async def _run_chunk(
        self,
        index: int,
        bulk: bool,
        chunk: Sequence[RecipientEvent],
        workflow_key: str,
        payload: Mapping[str, Any],
        overrides: Mapping[str, Any] | None,
        state: _CallState,
    ) -> list[EventOutcome]:
        """Send one chunk with quick retries; the chunk's events share one request and one key."""
        try:
            return await self._send_chunk(index, bulk, chunk, workflow_key, payload, overrides, state)
        except BaseException:
            # Siblings may be woken before the TaskGroup cancels them: they must not start a request.
            state.stopped = state.stopped or "not sent: the attempt failed"
            raise
        finally:
            if index == 0:
                state.first_response.set()

    async def _send_chunk(
        self,
        index: int,
        bulk: bool,
        chunk: Sequence[RecipientEvent],
        workflow_key: str,
        payload: Mapping[str, Any],
        overrides: Mapping[str, Any] | None,
        state: _CallState,
    ) -> list[EventOutcome]:
        generation = max(e.key_generation for e in chunk)
        control = state.control
        # The events still to send: all of them, until an unknown outcome was resolved through the feed and only
        # those Novu does not know are resent. `settled_early` holds the outcomes the feed decided meanwhile.
        current: Sequence[RecipientEvent] = chunk
        settled_early: dict[str, EventOutcome] = {}

        def outcomes(
            entries: Sequence[_EntryResult], status: int | None, retry_after: float | None, next_gen: int
        ) -> list[EventOutcome]:
            key = idempotency_key_for([e.transaction_id for e in current], generation)
            return [
                EventOutcome(
                    recipient_id=ev.recipient_id,
                    transaction_id=ev.transaction_id,
                    outcome=entry.outcome,
                    http_status=status,
                    error=self._redact(entry.error) if entry.error is not None else None,
                    retry_after_s=retry_after,
                    idempotency_key=key,
                    next_key_generation=generation if entry.outcome in ("acknowledged", "unknown") else next_gen,
                    novu_transaction_id=entry.novu_transaction_id,
                )
                for ev, entry in zip(current, entries, strict=True)
            ]

        def merged(result: list[EventOutcome]) -> list[EventOutcome]:
            if not settled_early:
                return result
            by_tx = {o.transaction_id: o for o in result} | settled_early
            return [by_tx[ev.transaction_id] for ev in chunk]

        async def settled(result: list[EventOutcome]) -> list[EventOutcome]:
            result = merged(result)
            if control.on_outcomes is not None:
                await control.on_outcomes(result)
            return result

        async def unsent(reason: str) -> list[EventOutcome]:
            return await settled(outcomes([_EntryResult("unsent", reason)] * len(current), None, None, generation))

        def encode() -> bytes:
            events_json = [self._event_body(workflow_key, payload, overrides, ev) for ev in current]
            body: Any = {"events": events_json} if bulk else events_json[0]
            return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()

        try:
            content = encode()
        except (TypeError, ValueError) as exc:
            entry = _EntryResult("permanent", f"payload or overrides cannot be encoded as JSON ({exc})")
            return await settled(outcomes([entry] * len(chunk), None, None, generation))

        cost = BULK_COST if bulk else SINGLE_COST
        attempt_no = 0
        last: list[EventOutcome] = []
        while True:
            if index != 0 and attempt_no == 0:
                await state.first_response.wait()
            if state.config_error is not None:
                status, error = state.config_error
                return merged(outcomes([_EntryResult("config", error)] * len(current), status, None, generation))
            async with state.slots:
                # Order matters: tokens first (may wait), then the fence, then the request, so that nothing is
                # sent on a claim that was lost while this request waited for its turn; and the outcome is reported
                # before the slot is freed, so no sibling starts while a failure to record it is on its way.
                reason = state.unsent_reason()
                if reason is not None and attempt_no == 0:
                    return await unsent(reason)
                deadline = control.deadline if attempt_no == 0 else None
                if reason is None and not await self._take_tokens(cost, deadline, control):
                    return await unsent(state.unsent_reason() or "not sent: the time budget ran out waiting for tokens")
                if (
                    state.stopped is None
                    and control.before_request is not None
                    and not await control.before_request(current)
                ):
                    state.stopped = "not sent: this attempt no longer holds the notification's claim"
                if state.stopped is not None:
                    # A retry of a request already sent: its last outcome stands, nothing more is sent.
                    return await unsent(state.stopped) if attempt_no == 0 else await settled(last)
                tx_ids = [e.transaction_id for e in current]
                key = idempotency_key_for(tx_ids, generation)
                attempt = await self._attempt(bulk, len(current), content, key, tx_ids)
                if index == 0:
                    state.first_response.set()
                definite_next = generation if attempt.ambiguous else generation + 1
                last = outcomes(attempt.entries, attempt.status, attempt.retry_after_s, definite_next)
                cfg = attempt.config
                if cfg is not None:
                    if state.config_error is None:
                        state.config_error = (attempt.status, cfg.error or "Novu configuration error")
                        logger.error("Novu configuration error: %s", self._redact(cfg.error or ""))
                    return await settled(last)
                if attempt.status == 429 and attempt.retry_after_s is not None and self._budget is not None:
                    self._budget.penalize(attempt.retry_after_s)
                if not attempt.unknown and not (attempt.transient and attempt_no < self._quick_retries):
                    return await settled(last)
            if attempt.unknown:
                # Novu may have run the request (with idempotency off it would run a resend too): let it settle,
                # then ask the feed about each event and go on with only those it does not know.
                why = last[0].error or "no answer"
                await asyncio.sleep(self.settle_s)
                found = await self._lookup_many([e.transaction_id for e in current])
                absent: list[RecipientEvent] = []
                for ev, f, out in zip(current, found, last, strict=True):
                    if f is None:
                        settled_early[ev.transaction_id] = self._looked_up(ev, None, why)
                    elif f:
                        settled_early[ev.transaction_id] = dataclasses.replace(
                            out,
                            outcome="acknowledged",
                            error=None,
                            next_key_generation=generation,
                            novu_transaction_id=ev.transaction_id,
                        )
                    else:
                        absent.append(ev)
                logger.warning(
                    "Novu outcome unknown, looked up in the activity feed",
                    extra={"http_status": attempt.status, "events": len(current), "not_processed": len(absent)},
                )
                kept = [o for o in last if o.transaction_id in {e.transaction_id for e in absent}]
                if not absent:
                    return await settled([])
                if attempt_no >= self._quick_retries:
                    # Not processed, as far as the feed knows: a later attempt sends them (transient).
                    return await settled(kept)
                if len(absent) != len(current):
                    current = absent
                    content = encode()
                last = kept
            delay = attempt.retry_after_s if attempt.retry_after_s is not None else 0.5 * 2**attempt_no
            delay = min(delay, self._max_retry_sleep_s)
            logger.warning(
                "Novu transient failure, retrying",
                extra={
                    "http_status": attempt.status,
                    "events": len(current),
                    "retry": attempt_no + 1,
                    "delay_s": delay,
                    "same_key": attempt.ambiguous,
                },
            )
            if not attempt.unknown:
                await asyncio.sleep(delay)
            generation = definite_next
            attempt_no += 1

    async def _attempt(self, bulk: bool, n: int, content: bytes, key: str, tx_ids: Sequence[str] = ()) -> _Attempt:
        """One traced attempt: the httpx span sits inside a span with what only xnovu knows about the request.

        Attributes are identifiers and counts, never a payload value: the recipients count, the transactionId of a
        single trigger, the HTTP status and the outcome.
        """
        attributes: dict[str, Any] = {"xnovu.novu.bulk": bulk, "xnovu.novu.recipients": n}
        if not bulk and len(tx_ids) == 1:
            attributes["xnovu.novu.transaction_id"] = tx_ids[0]
        with self._tracing.span("novu.trigger_bulk" if bulk else "novu.trigger", attributes) as span:
            attempt = await self._attempt_once(bulk, n, content, key)
            if attempt.status is not None:
                span.set_attribute("http.response.status_code", attempt.status)
            outcomes = sorted({e.outcome for e in attempt.entries})
            span.set_attribute("xnovu.novu.outcome", ",".join(outcomes))
            acked = sum(1 for e in attempt.entries if e.outcome == "acknowledged")
            span.set_attribute("xnovu.novu.acknowledged", acked)
            return attempt

    async def _attempt_once(self, bulk: bool, n: int, content: bytes, key: str) -> _Attempt:
        """Send once and classify, turning every httpx failure into an outcome."""
        path = BULK_PATH if bulk else TRIGGER_PATH
        try:
            response = await self._request("POST", path, content=content, idempotency_key=key)
        except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
            error = f"cannot send to Novu at {self._api_url} ({type(exc).__name__}); check NOVU_API_URL"
            return _Attempt(None, [_EntryResult("config", error)] * n, None, ambiguous=True)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            # No connection, so no request: Novu cannot have processed it.
            detail = self._redact(str(exc)) or "no detail"
            error = f"could not reach Novu ({type(exc).__name__}: {detail})"
            return _Attempt(None, [_EntryResult("transient", error)] * n, None, ambiguous=True)
        except (httpx.TimeoutException, TimeoutError):
            error = f"no response from Novu within {self._timeout_s:g} s"
            return _Attempt(None, [_EntryResult("transient", error)] * n, None, ambiguous=True, unknown=True)
        except httpx.HTTPError as exc:
            detail = self._redact(str(exc)) or "no detail"
            error = f"the connection to Novu broke before its answer ({type(exc).__name__}: {detail})"
            return _Attempt(None, [_EntryResult("transient", error)] * n, None, ambiguous=True, unknown=True)

        status = response.status_code
        retry_after = _parse_retry_after(response.headers)
        try:
            body: Any = response.json()
        except ValueError:
            body = response.text[:_MAX_ERROR_CHARS]
        ambiguous = status in _AMBIGUOUS_STATUSES

        if not 200 <= status < 300:
            outcome, reason = classify(status, body)
            unknown = status in _UNKNOWN_STATUSES
            return _Attempt(status, [_EntryResult(outcome, reason)] * n, retry_after, ambiguous, unknown)
        data = body.get("data", body) if isinstance(body, Mapping) else body
        if not bulk:
            return _Attempt(status, [_EntryResult(*_classify_entry(data))], retry_after, ambiguous)
        if not isinstance(data, list) or len(data) != n:
            # Accepted but unreadable: re-sending could run the workflow twice, so the events are not retried.
            unexpected = f"Novu returned an unexpected bulk response (HTTP {status}); events are not retried"
            return _Attempt(status, [_EntryResult("permanent", unexpected)] * n, retry_after, ambiguous)
        entries = [_EntryResult(*_classify_entry(item)) for item in data]
        return _Attempt(status, entries, retry_after, ambiguous)

    async def lookup(self, events: Sequence[RecipientEvent]) -> list[EventOutcome]:
        """Ask Novu's activity feed whether it processed each event (docs/novu-contract.md "Unknown outcomes").

        One outcome per event, in order: `acknowledged` (the feed lists its transactionId: never send it again),
        `unsent` (the feed does not know it: sending it is safe), `unknown` (the feed did not answer). The caller
        waits `settle_s` after the request in question first: the feed lags Novu's answer.
        """
        found = await self._lookup_many([e.transaction_id for e in events])
        return [self._looked_up(e, f, "looked up in Novu's activity feed") for e, f in zip(events, found, strict=True)]

    def _looked_up(self, event: RecipientEvent, found: bool | None, why: str) -> EventOutcome:
        key = idempotency_key_for([event.transaction_id], event.key_generation)
        if found:
            outcome: EventKind = "acknowledged"
            error = None
        elif found is None:
            outcome, error = "unknown", _UNKNOWN_ERROR.format(why=why)
        else:
            outcome, error = "unsent", "Novu's activity feed does not know the event: it was not processed"
        return EventOutcome(
            recipient_id=event.recipient_id,
            transaction_id=event.transaction_id,
            outcome=outcome,
            http_status=None,
            error=error,
            retry_after_s=None,
            idempotency_key=key,
            next_key_generation=event.key_generation,
            novu_transaction_id=event.transaction_id if found else None,
        )

    async def _lookup_many(self, transaction_ids: Sequence[str]) -> list[bool | None]:
        """`_lookup` for each id, FEED_CONCURRENCY at a time; counts what stays unknown (`on_unknown`)."""
        gate = asyncio.Semaphore(FEED_CONCURRENCY)

        async def one(tx: str) -> bool | None:
            async with gate:
                return await self._lookup(tx)

        found = list(await asyncio.gather(*(one(tx) for tx in transaction_ids)))
        unknown = sum(1 for f in found if f is None)
        if unknown and self._on_unknown is not None:
            try:
                self._on_unknown(unknown)
            except Exception:  # metrics must never break a send
                logger.exception("on_unknown callback failed")
        return found

    async def _lookup(self, transaction_id: str) -> bool | None:
        """True if the feed lists an event with this transactionId, False if it answers without one, None if it
        could not be asked (no answer, an error status, an unreadable body)."""
        params = {"transactionId": transaction_id, "page": "0", "limit": "10"}
        with self._tracing.span("novu.feed_lookup", {"xnovu.novu.transaction_id": transaction_id}) as span:
            try:
                response = await self._send(self._http.build_request("GET", FEED_PATH, params=params))
            except (httpx.HTTPError, TimeoutError) as exc:
                logger.warning("Novu activity feed unreachable", extra={"error": type(exc).__name__})
                return None
            span.set_attribute("http.response.status_code", response.status_code)
            if not 200 <= response.status_code < 300:
                logger.warning("Novu activity feed answered an error", extra={"http_status": response.status_code})
                return None
            try:
                body: Any = response.json()
            except ValueError:
                return None
            data = body.get("data") if isinstance(body, Mapping) else None
            if not isinstance(data, list):
                return None
            return any(isinstance(e, Mapping) and e.get("transactionId") == transaction_id for e in data)

    async def check_auth(self) -> tuple[bool, str]:
        """Prove the key works with a harmless authenticated call (cancelling a transaction never sent)."""
        if self._budget is not None:
            await self._budget.acquire(SINGLE_COST)
        try:
            response = await self._request("DELETE", DOCTOR_PROBE_PATH, content=None, idempotency_key=None)
        except (httpx.HTTPError, TimeoutError) as exc:
            detail = self._redact(str(exc)) or "no response"
            return False, f"could not reach Novu at {self._api_url} ({type(exc).__name__}: {detail})"
        status = response.status_code
        if 200 <= status < 300:
            return True, f"Novu at {self._api_url} accepted the API key (HTTP {status})"
        try:
            body: Any = response.json()
        except ValueError:
            body = response.text[:_MAX_ERROR_CHARS]
        _, error = classify(status, body)
        return False, self._redact(error or f"Novu answered HTTP {status}")
