"""NovuClient against httpx.MockTransport: chunking, classification, quick retries, idempotency keys, secrets."""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import httpx
import pytest

from xnovu.novu.client import (
    BULK_PATH,
    FEED_PATH,
    TRIGGER_PATH,
    EventOutcome,
    NovuClient,
    RecipientEvent,
    SendControl,
    _parse_retry_after,
    classify,
    idempotency_key_for,
    plan_chunks,
    transaction_id_for,
)

SECRET = "sk_test_9f8e7d6c5b4a3210SECRET"
API = "https://novu.test"

Handler = Callable[[httpx.Request], Awaitable[httpx.Response]]


async def feed_knows_nothing(request: httpx.Request) -> httpx.Response:
    """Novu's activity feed for events it never processed."""
    return httpx.Response(200, json={"data": [], "hasMore": False, "pageSize": 10, "page": 0})


def feed_knows(*transaction_ids: str) -> Handler:
    """The activity feed listing these transactionIds as processed."""

    async def respond(request: httpx.Request) -> httpx.Response:
        tx = request.url.params["transactionId"]
        data = (
            [{"_id": "n1", "transactionId": tx, "subscriber": {"subscriberId": "s"}}] if tx in transaction_ids else []
        )
        return httpx.Response(200, json={"data": data, "hasMore": False, "pageSize": 10, "page": 0})

    return respond


@dataclass
class Recorder:
    """Records every trigger request the client makes and answers through `respond`; activity-feed look-ups go to
    `lookups`, answered by `feed`."""

    respond: Handler
    requests: list[httpx.Request] = field(default_factory=list)
    feed: Handler = feed_knows_nothing
    lookups: list[httpx.Request] = field(default_factory=list)

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.method == "GET" and request.url.path == FEED_PATH:
            self.lookups.append(request)
            return await self.feed(request)
        self.requests.append(request)
        return await self.respond(request)

    def bodies(self) -> list[Any]:
        return [json.loads(r.content) for r in self.requests]

    def keys(self) -> list[str]:
        return [r.headers["idempotency-key"] for r in self.requests]


class FakeBudget:
    def __init__(self) -> None:
        self.costs: list[int] = []
        self.penalties: list[float] = []
        self.whose: list[tuple[int, str | None]] = []
        self.notifications: list[Hashable | None] = []

    async def acquire(
        self, cost: int, *, urgency: int = 0, enterprise: str | None = None, notification: Hashable | None = None
    ) -> None:
        self.costs.append(cost)
        self.whose.append((urgency, enterprise))
        self.notifications.append(notification)

    def penalize(self, seconds: float) -> None:
        self.penalties.append(seconds)

    def snapshot(self) -> dict[str, float]:
        return {}


def ok_entry(request_event: dict[str, Any]) -> dict[str, Any]:
    return {"acknowledged": True, "status": "processed", "transactionId": request_event["transactionId"]}


def error_body(status: int, message: Any) -> dict[str, Any]:
    return {"statusCode": status, "timestamp": "2024-10-24T00:00:00Z", "path": "/v1/events/trigger", "message": message}


async def novu_ok(request: httpx.Request) -> httpx.Response:
    """Stand-in for a healthy Novu: acknowledges every event."""
    body = json.loads(request.content)
    if request.url.path == BULK_PATH:
        return httpx.Response(201, json={"data": [ok_entry(e) for e in body["events"]]})
    return httpx.Response(201, json={"data": ok_entry(body)})


def sequence(*responses: httpx.Response | Exception) -> Handler:
    """Answer with the given responses in turn, then like a healthy Novu."""
    queue = list(responses)

    async def respond(request: httpx.Request) -> httpx.Response:
        if queue:
            item = queue.pop(0)
            if isinstance(item, Exception):
                raise item
            return item
        return await novu_ok(request)

    return respond


def make_events(n: int, notification_id: int = 7, generation: int = 0) -> list[RecipientEvent]:
    return [
        RecipientEvent(f"user-{i:04d}", transaction_id_for(notification_id, f"user-{i:04d}"), generation)
        for i in range(n)
    ]


def client_for(recorder: Recorder, **kwargs: Any) -> NovuClient:
    kwargs.setdefault("max_retry_sleep_s", 0.01)
    kwargs.setdefault("settle_s", 0.0)
    return NovuClient(API, SECRET, transport=httpx.MockTransport(recorder), **kwargs)


async def send(client: NovuClient, events: list[RecipientEvent], **kwargs: Any) -> list[EventOutcome]:
    async with client:
        return await client.trigger(
            workflow_key=kwargs.pop("workflow_key", "order-shipped"),
            payload=kwargs.pop("payload", {"orderId": "o-1"}),
            overrides=kwargs.pop("overrides", None),
            events=events,
            **kwargs,
        )


# --- pure functions ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "bulks", "singles"),
    [(0, 0, 0), (1, 0, 1), (99, 0, 99), (100, 1, 0), (101, 1, 1), (250, 2, 50)],
)
def test_plan_chunks_uses_bulk_only_for_full_hundreds(n: int, bulks: int, singles: int) -> None:
    plan = plan_chunks(n)
    assert plan == [("bulk", 100)] * bulks + [("single", 1)] * singles
    assert sum(size for _, size in plan) == n


def test_transaction_id_format() -> None:
    assert transaction_id_for(42, "3f1c-uuid") == "xnovu-42-3f1c-uuid"


def test_idempotency_key_is_deterministic_and_short() -> None:
    tx = [transaction_id_for(1, f"r{i}") for i in range(100)]
    key = idempotency_key_for(tx, 0)
    assert key == idempotency_key_for(list(tx), 0)
    assert key.startswith("xnovu-") and len(key) == 6 + 48 <= 255
    assert key != idempotency_key_for(tx, 1), "a new generation must rotate the key"
    assert key != idempotency_key_for(list(reversed(tx)), 0), "the order of events is part of the key"
    assert key != idempotency_key_for(tx[:-1], 0)


def test_idempotency_key_matches_documented_formula() -> None:
    import hashlib

    expected = "xnovu-" + hashlib.sha256(b"a\nb#g3").hexdigest()[:48]
    assert idempotency_key_for(["a", "b"], 3) == expected


PROCESSED = {"data": {"acknowledged": True, "status": "processed", "transactionId": "t"}}


@pytest.mark.parametrize(
    ("status", "body", "outcome"),
    [
        (201, PROCESSED, "acknowledged"),
        (201, {"data": {"acknowledged": True, "status": "trigger_not_active"}}, "permanent"),
        (201, {"data": {"acknowledged": True, "status": "error", "error": ["boom"]}}, "permanent"),
        (
            400,
            {"statusCode": 400, "type": "PAYLOAD_VALIDATION_ERROR", "errors": [{"field": "x", "message": "bad"}]},
            "permanent",
        ),
        (401, error_body(401, "API Key not found"), "config"),
        (402, error_body(402, "plan limit"), "config"),
        (403, error_body(403, "Forbidden"), "config"),
        (404, error_body(404, "Not Found"), "config"),
        (408, error_body(408, "Request Timeout"), "transient"),
        (409, error_body(409, 'Request with key "k" is currently being processed'), "transient"),
        (413, error_body(413, "Payload size (600000 bytes) exceeds maximum allowed size"), "permanent"),
        (422, {**error_body(422, "workflow_not_found"), "error": "Unprocessable Entity"}, "permanent"),
        (429, error_body(429, "API rate limit exceeded"), "transient"),
        (500, {**error_body(500, "Internal server error"), "errorId": "e1"}, "transient"),
        (503, "<html>Service Unavailable</html>", "transient"),
        (418, None, "permanent"),
    ],
)
def test_classify_by_status(status: int, body: Any, outcome: str) -> None:
    got, error = classify(status, body)
    assert got == outcome
    if outcome == "acknowledged":
        assert error is None
    else:
        assert error, "every non-ack outcome explains itself"
        if status >= 300:
            assert f"HTTP {status}" in error


def test_classify_error_text_reads_every_message_shape() -> None:
    assert "workflow_not_found" in (classify(422, error_body(422, "workflow_not_found"))[1] or "")
    assert "a; b" in (classify(400, error_body(400, ["a", "b"]))[1] or "")
    assert '"k": "v"' in (classify(400, error_body(400, {"k": "v"}))[1] or "")
    field_errors = {"statusCode": 422, "errors": {"events": {"messages": ["events must contain no more than 100"]}}}
    assert "events: events must contain no more than 100" in (classify(422, field_errors)[1] or "")
    assert "not active" in (classify(201, {"data": {"acknowledged": True, "status": "trigger_not_active"}})[1] or "")
    assert "check NOVU_SECRET_KEY" in (classify(401, error_body(401, "Unauthorized"))[1] or "")


def test_retry_after_parses_seconds_and_http_dates() -> None:
    assert _parse_retry_after(httpx.Headers({"Retry-After": "3"})) == 3.0
    assert _parse_retry_after(httpx.Headers({"retry-after-ms": "250"})) == 0.25
    assert _parse_retry_after(httpx.Headers({})) is None
    assert _parse_retry_after(httpx.Headers({"Retry-After": "soon"})) is None
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    assert 25 <= (_parse_retry_after(httpx.Headers({"Retry-After": when})) or 0) <= 31
    past = format_datetime(datetime.now(UTC) - timedelta(seconds=30), usegmt=True)
    assert _parse_retry_after(httpx.Headers({"Retry-After": past})) == 0.0


# --- wire format ------------------------------------------------------------------------------------------------


async def test_single_trigger_wire_format() -> None:
    rec = Recorder(novu_ok)
    events = make_events(1)
    [out] = await send(client_for(rec), events, overrides={"severity": "high"})
    [req] = rec.requests
    assert req.method == "POST" and str(req.url) == API + TRIGGER_PATH
    assert req.headers["authorization"] == f"ApiKey {SECRET}"
    assert req.headers["content-type"] == "application/json"
    assert req.headers["accept"] == "application/json"
    assert req.headers["user-agent"].startswith("xnovu/")
    assert req.headers["idempotency-key"] == idempotency_key_for([events[0].transaction_id], 0)
    assert json.loads(req.content) == {
        "name": "order-shipped",
        "to": {"subscriberId": "user-0000"},
        "payload": {"orderId": "o-1"},
        "overrides": {"severity": "high"},
        "transactionId": "xnovu-7-user-0000",
    }
    assert out == EventOutcome(
        recipient_id="user-0000",
        transaction_id="xnovu-7-user-0000",
        outcome="acknowledged",
        http_status=201,
        error=None,
        retry_after_s=None,
        idempotency_key=req.headers["idempotency-key"],
        next_key_generation=0,
        novu_transaction_id="xnovu-7-user-0000",
    )


async def test_overrides_omitted_when_absent() -> None:
    rec = Recorder(novu_ok)
    await send(client_for(rec), make_events(1), overrides=None)
    assert "overrides" not in rec.bodies()[0]


async def test_250_events_make_two_bulk_and_fifty_single_requests_in_input_order() -> None:
    async def shuffled(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(random.random() / 200)  # complete out of order
        return await novu_ok(request)

    rec = Recorder(shuffled)
    budget = FakeBudget()
    events = make_events(250)
    outcomes = await send(client_for(rec, budget=budget), events, concurrency=8)
    paths = [r.url.path for r in rec.requests]
    assert paths.count(BULK_PATH) == 2 and paths.count(TRIGGER_PATH) == 50
    assert sorted(budget.costs) == [1] * 50 + [100, 100]
    bulk_bodies = [json.loads(r.content) for r in rec.requests if r.url.path == BULK_PATH]
    assert all(len(b["events"]) == 100 for b in bulk_bodies)
    assert [o.transaction_id for o in outcomes] == [e.transaction_id for e in events]
    assert [o.recipient_id for o in outcomes] == [e.recipient_id for e in events]
    assert all(o.outcome == "acknowledged" and o.novu_transaction_id == o.transaction_id for o in outcomes)
    bulk_keys = {r.headers["idempotency-key"] for r in rec.requests if r.url.path == BULK_PATH}
    assert bulk_keys == {
        idempotency_key_for([e.transaction_id for e in events[:100]], 0),
        idempotency_key_for([e.transaction_id for e in events[100:200]], 0),
    }


async def test_concurrency_bounds_requests_in_flight() -> None:
    in_flight = peak = 0

    async def slow(request: httpx.Request) -> httpx.Response:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.005)
        in_flight -= 1
        return await novu_ok(request)

    rec = Recorder(slow)
    outcomes = await send(client_for(rec), make_events(40), concurrency=4)
    assert len(rec.requests) == 40 and all(o.outcome == "acknowledged" for o in outcomes)
    assert peak == 4


async def test_empty_event_list_makes_no_request() -> None:
    rec = Recorder(novu_ok)
    assert await send(client_for(rec), []) == []
    assert rec.requests == []


# --- bulk entries -----------------------------------------------------------------------------------------------


async def test_bulk_entry_error_fails_only_that_event() -> None:
    async def one_bad(request: httpx.Request) -> httpx.Response:
        events = json.loads(request.content)["events"]
        data = [ok_entry(e) for e in events]
        data[37] = {"acknowledged": True, "status": "error", "error": ["workflow_not_found"]}
        return httpx.Response(201, json={"data": data})

    rec = Recorder(one_bad)
    outcomes = await send(client_for(rec), make_events(100))
    assert len(rec.requests) == 1
    bad = outcomes[37]
    assert bad.outcome == "permanent" and bad.http_status == 201
    assert bad.error and "workflow_not_found" in bad.error
    assert bad.next_key_generation == 1 and bad.novu_transaction_id is None
    rest = outcomes[:37] + outcomes[38:]
    assert all(o.outcome == "acknowledged" and o.next_key_generation == 0 for o in rest)


async def test_bulk_request_level_error_applies_to_all_its_events() -> None:
    rec = Recorder(sequence(httpx.Response(413, json=error_body(413, "Event at index 3 has payload size too big"))))
    outcomes = await send(client_for(rec), make_events(101))
    assert [o.outcome for o in outcomes[:100]] == ["permanent"] * 100
    assert all(o.http_status == 413 and "index 3" in (o.error or "") for o in outcomes[:100])
    assert outcomes[100].outcome == "acknowledged"


async def test_unreadable_bulk_success_is_permanent_not_resent() -> None:
    rec = Recorder(sequence(httpx.Response(201, json={"data": [{"status": "processed"}]})))  # 1 entry for 100
    outcomes = await send(client_for(rec), make_events(100))
    assert len(rec.requests) == 1
    assert {o.outcome for o in outcomes} == {"permanent"}


async def test_not_processed_single_is_permanent_and_rotates() -> None:
    body = {"data": {"acknowledged": True, "status": "trigger_not_active"}}
    rec = Recorder(sequence(httpx.Response(201, json=body)))
    [out] = await send(client_for(rec), make_events(1))
    assert out.outcome == "permanent" and "not active" in (out.error or "")
    assert out.next_key_generation == 1 and len(rec.requests) == 1


# --- retries and idempotency keys -------------------------------------------------------------------------------


async def test_5xx_then_success_retries_with_rotated_key() -> None:
    rec = Recorder(sequence(httpx.Response(500, json={**error_body(500, "Internal server error"), "errorId": "e"})))
    events = make_events(1)
    [out] = await send(client_for(rec), events)
    assert len(rec.requests) == 2
    assert rec.bodies()[0] == rec.bodies()[1]
    tx = [events[0].transaction_id]
    assert rec.keys() == [idempotency_key_for(tx, 0), idempotency_key_for(tx, 1)]
    assert out.outcome == "acknowledged" and out.http_status == 201
    assert out.idempotency_key == idempotency_key_for(tx, 1) and out.next_key_generation == 1


async def test_timeout_then_success_reuses_the_same_key() -> None:
    rec = Recorder(sequence(httpx.ReadTimeout("read timed out")))
    seen: list[int | None] = []
    [out] = await send(client_for(rec, on_response=lambda s, _t: seen.append(s)), make_events(1))
    assert len(rec.requests) == 2 and rec.keys()[0] == rec.keys()[1]
    assert out.outcome == "acknowledged" and out.next_key_generation == 0
    assert seen == [None, 201]


async def test_connection_reset_then_success_reuses_the_same_key() -> None:
    rec = Recorder(sequence(httpx.RemoteProtocolError("Server disconnected without sending a response.")))
    [out] = await send(client_for(rec), make_events(1, generation=4))
    assert rec.keys() == [idempotency_key_for(["xnovu-7-user-0000"], 4)] * 2
    assert out.outcome == "acknowledged" and out.next_key_generation == 4


@pytest.mark.parametrize("status", [408, 409, 429, 502, 503, 504])
async def test_in_flight_409_rate_limit_and_gateway_errors_reuse_the_same_key(status: int) -> None:
    """The first request may still be running (409), may have reached Novu behind a failing gateway or proxy
    (408/502/503/504), or was answered by the rate limiter before the idempotency layer (429): rotating the key
    then could run the workflow twice."""
    rec = Recorder(sequence(httpx.Response(status, headers={"Retry-After": "0"}, json=error_body(status, "busy"))))
    [out] = await send(client_for(rec), make_events(1))
    assert len(rec.requests) == 2 and rec.keys()[0] == rec.keys()[1]
    assert out.outcome == "acknowledged"


async def test_real_timeout_is_enforced_and_reported_without_status() -> None:
    async def hang(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(5)
        raise AssertionError("unreachable")

    rec = Recorder(hang)
    seen: list[int | None] = []
    [out] = await send(
        client_for(rec, timeout_s=0.05, quick_retries=0, on_response=lambda s, _t: seen.append(s)), make_events(1)
    )
    assert out.outcome == "transient" and out.http_status is None
    assert "0.05 s" in (out.error or "") and out.next_key_generation == 0
    assert seen == [None]


async def test_quick_retries_exhausted_returns_transient() -> None:
    rec = Recorder(sequence(*[httpx.Response(500, text="down") for _ in range(5)]))
    events = make_events(1)
    [out] = await send(client_for(rec, quick_retries=2), events)
    assert len(rec.requests) == 3
    assert len(set(rec.keys())) == 3, "each definite (cached) 500 rotates the key"
    assert out.outcome == "transient" and out.http_status == 500
    assert out.idempotency_key == idempotency_key_for([events[0].transaction_id], 2)
    assert out.next_key_generation == 3


async def test_429_retry_after_is_honoured_and_penalizes_the_budget() -> None:
    rec = Recorder(
        sequence(httpx.Response(429, headers={"Retry-After": "0.2"}, json=error_body(429, "API rate limit exceeded")))
    )
    budget = FakeBudget()
    loop = asyncio.get_running_loop()
    started = loop.time()
    [out] = await send(client_for(rec, budget=budget, max_retry_sleep_s=5.0), make_events(1))
    assert loop.time() - started >= 0.19
    assert budget.penalties == [0.2]
    assert budget.costs == [1, 1]
    assert len(rec.requests) == 2 and rec.keys()[0] == rec.keys()[1], "a 429 is never cached under the key"
    assert out.outcome == "acknowledged"


async def test_retry_sleep_is_capped_but_retry_after_is_reported() -> None:
    rec = Recorder(sequence(*[httpx.Response(429, headers={"Retry-After": "30"}) for _ in range(3)]))
    loop = asyncio.get_running_loop()
    started = loop.time()
    [out] = await send(client_for(rec, max_retry_sleep_s=0.01, quick_retries=2), make_events(1))
    assert loop.time() - started < 1.0
    assert out.outcome == "transient" and out.retry_after_s == 30.0


async def test_permanent_errors_are_not_retried() -> None:
    rec = Recorder(sequence(httpx.Response(422, json=error_body(422, "workflow_not_found"))))
    [out] = await send(client_for(rec), make_events(1))
    assert len(rec.requests) == 1
    assert out.outcome == "permanent" and out.http_status == 422 and "workflow_not_found" in (out.error or "")
    assert out.next_key_generation == 1


async def test_on_response_is_called_for_every_attempt() -> None:
    rec = Recorder(sequence(httpx.Response(502), httpx.Response(500)))
    seen: list[tuple[int | None, float]] = []
    await send(client_for(rec, on_response=lambda s, t: seen.append((s, t))), make_events(1))
    assert [s for s, _ in seen] == [502, 500, 201]
    assert all(t >= 0 for _, t in seen)


async def test_on_response_failure_does_not_break_sending() -> None:
    def broken(status: int | None, seconds: float) -> None:
        raise RuntimeError("metrics down")

    [out] = await send(client_for(Recorder(novu_ok), on_response=broken), make_events(1))
    assert out.outcome == "acknowledged"


# --- configuration errors and secrets ---------------------------------------------------------------------------


async def test_401_short_circuits_the_whole_call_without_leaking_the_key(caplog: pytest.LogCaptureFixture) -> None:
    # A body that echoes the key must still not leak it.
    rec = Recorder(sequence(httpx.Response(401, json=error_body(401, f'Invalid authentication scheme: "{SECRET}"'))))
    caplog.set_level(logging.DEBUG)
    client = client_for(rec)
    outcomes = await send(client, make_events(150), concurrency=10)
    assert len(rec.requests) == 1
    assert len(outcomes) == 150 and {o.outcome for o in outcomes} == {"config"}
    assert all(o.http_status == 401 for o in outcomes)
    for o in outcomes:
        assert o.error and "NOVU_SECRET_KEY" in o.error and SECRET not in o.error
        assert SECRET not in repr(o)
    assert SECRET not in repr(client)
    assert SECRET not in caplog.text


async def test_403_and_402_are_config_outcomes() -> None:
    for status in (403, 402):
        rec = Recorder(sequence(httpx.Response(status, json=error_body(status, "nope"))))
        outcomes = await send(client_for(rec), make_events(3))
        assert len(rec.requests) == 1 and {o.outcome for o in outcomes} == {"config"}


@pytest.mark.parametrize(
    ("status", "says", "never"),
    [(402, "plan limit has been reached", "NOVU_SECRET_KEY"), (403, "NOVU_SECRET_KEY", "plan")],
)
def test_a_configuration_error_names_its_own_fix(status: int, says: str, never: str) -> None:
    """A 402 is fixed in Novu's billing, not by rotating the key: the reason must not send operators to the key."""
    _, error = classify(status, error_body(status, "nope"))
    assert error and says in error and never not in error and f"HTTP {status}" in error


async def test_connection_error_text_never_contains_the_key() -> None:
    rec = Recorder(sequence(*[httpx.ConnectError(f"refused for {SECRET}") for _ in range(3)]))
    [out] = await send(client_for(rec), make_events(1))
    assert out.outcome == "transient" and out.http_status is None
    assert out.error and SECRET not in out.error and "ConnectError" in out.error


async def test_unencodable_payload_is_permanent_without_a_request() -> None:
    rec = Recorder(novu_ok)
    [out] = await send(client_for(rec), make_events(1), payload={"when": object()})
    assert out.outcome == "permanent" and rec.requests == []


# --- check_auth -------------------------------------------------------------------------------------------------


async def test_check_auth_ok() -> None:
    async def cancel(request: httpx.Request) -> httpx.Response:
        assert request.method == "DELETE" and request.url.path == "/v1/events/trigger/xnovu-doctor-probe"
        return httpx.Response(200, json={"data": False})

    budget = FakeBudget()
    async with client_for(Recorder(cancel), budget=budget) as client:
        ok, message = await client.check_auth()
    assert ok and "accepted" in message
    assert budget.costs == [1]


async def test_check_auth_bad_key() -> None:
    rec = Recorder(sequence(httpx.Response(401, json=error_body(401, f"API Key not found {SECRET}"))))
    async with client_for(rec) as client:
        ok, message = await client.check_auth()
    assert not ok and "NOVU_SECRET_KEY" in message and SECRET not in message


async def test_check_auth_unreachable() -> None:
    rec = Recorder(sequence(httpx.ConnectError("connection refused")))
    async with client_for(rec) as client:
        ok, message = await client.check_auth()
    assert not ok and "could not reach Novu" in message


# --- SendControl: fences, per-request outcomes, deadlines, and failures that are not Novu's ----------------------


async def test_each_request_reports_its_outcomes_as_soon_as_it_has_them() -> None:
    recorder = Recorder(novu_ok)
    seen: list[int] = []

    async def on_outcomes(outcomes: Any) -> None:
        seen.append(len(outcomes))

    outcomes = await send(client_for(recorder), make_events(203), control=SendControl(on_outcomes=on_outcomes))
    assert sorted(seen) == [1, 1, 1, 100, 100], "one call per request, 2 bulks and 3 singles"
    assert all(o.outcome == "acknowledged" for o in outcomes)


async def test_a_lost_claim_stops_the_request_and_every_later_one() -> None:
    recorder = Recorder(novu_ok)
    answers = iter([True, False])

    async def fence(events: Any) -> bool:
        return next(answers, False)

    outcomes = await send(
        client_for(recorder), make_events(300), concurrency=1, control=SendControl(before_request=fence)
    )
    assert len(recorder.requests) == 1, "only the request fenced while the claim was held"
    assert Counter(o.outcome for o in outcomes) == {"acknowledged": 100, "unsent": 200}


async def test_requests_not_started_by_the_deadline_come_back_unsent() -> None:
    # The deadline is generous (set-up on a loaded CI machine once took over 0.1 s and no request started at all);
    # the first request then outlasts it, so the outcome does not depend on how fast the machine is.
    deadline = time.monotonic() + 2.0

    async def slow(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(max(0.0, deadline - time.monotonic()) + 0.05)
        return await novu_ok(request)

    recorder = Recorder(slow)
    outcomes = await send(client_for(recorder), make_events(300), concurrency=1, control=SendControl(deadline=deadline))
    assert len(recorder.requests) == 1, "the request under way finished; none started after the deadline"
    assert Counter(o.outcome for o in outcomes) == {"acknowledged": 100, "unsent": 200}


async def test_every_request_asks_the_budget_in_the_turn_of_its_urgency_and_enterprise() -> None:
    """Issue 17: the token budget serves the most urgent first and enterprises by turns, so it must know whose
    request it is (the trigger core passes the row's urgency and enterprise through SendControl)."""
    budget = FakeBudget()
    control = SendControl(urgency=2, enterprise="8c2f4b1e-0a6d-4c59-9d5e-3f1b2a7c6d90", notification=41)
    await send(client_for(Recorder(novu_ok), budget=budget), make_events(103), control=control)
    assert budget.whose == [(2, "8c2f4b1e-0a6d-4c59-9d5e-3f1b2a7c6d90")] * 4
    assert budget.notifications == [41] * 4, "the notification's requests take turns with other notifications'"
    plain = FakeBudget()
    await send(client_for(Recorder(novu_ok), budget=plain), make_events(1))
    assert plain.whose == [(0, None)]


async def test_a_database_timeout_in_the_token_budget_is_raised_not_reported_as_a_novu_timeout() -> None:
    class TimingOutBudget(FakeBudget):
        async def acquire(
            self, cost: int, *, urgency: int = 0, enterprise: str | None = None, notification: Hashable | None = None
        ) -> None:
            raise TimeoutError("the budget row did not answer")

    recorder = Recorder(novu_ok)
    with pytest.raises(TimeoutError):
        await send(client_for(recorder, budget=TimingOutBudget()), make_events(3))
    assert recorder.requests == []


async def test_a_failing_ledger_write_stops_the_sibling_requests() -> None:
    async def on_outcomes(outcomes: Any) -> None:
        raise ConnectionResetError("the database went away")

    recorder = Recorder(novu_ok)
    with pytest.raises(ConnectionResetError):
        await send(client_for(recorder), make_events(5), concurrency=1, control=SendControl(on_outcomes=on_outcomes))
    await asyncio.sleep(0.1)
    assert len(recorder.requests) == 1, "no request starts after the attempt failed"


# -- unknown outcomes: looked up in the activity feed before anything is resent (docs/novu-contract.md) -----------


async def test_a_timeout_whose_event_novu_processed_is_acknowledged_from_the_feed_and_not_resent() -> None:
    """Idempotency off, the request was processed but its answer came too late: resending it would deliver twice."""
    events = make_events(1)
    rec = Recorder(sequence(httpx.ReadTimeout("read timed out")), feed=feed_knows(events[0].transaction_id))
    [out] = await send(client_for(rec), events)
    assert len(rec.requests) == 1, "not resent"
    assert len(rec.lookups) == 1
    assert out.outcome == "acknowledged" and out.novu_transaction_id == events[0].transaction_id
    assert out.next_key_generation == 0 and out.error is None


async def test_a_timeout_whose_event_the_feed_does_not_know_is_resent_under_the_same_key() -> None:
    rec = Recorder(sequence(httpx.ReadTimeout("read timed out")))
    [out] = await send(client_for(rec), make_events(1))
    assert len(rec.lookups) == 1 and len(rec.requests) == 2 and rec.keys()[0] == rec.keys()[1]
    assert out.outcome == "acknowledged"


async def test_the_feed_is_asked_only_after_the_settle_delay() -> None:
    asked_at: list[float] = []

    async def feed(request: httpx.Request) -> httpx.Response:
        asked_at.append(time.monotonic())
        return await feed_knows_nothing(request)

    rec = Recorder(sequence(httpx.ReadTimeout("read timed out")), feed=feed)
    started = time.monotonic()
    await send(client_for(rec, settle_s=0.3), make_events(1))
    assert asked_at and asked_at[0] - started >= 0.3


async def test_an_outcome_the_feed_cannot_tell_stays_unknown_is_not_resent_and_is_counted() -> None:
    async def feed_down(request: httpx.Request) -> httpx.Response:
        return httpx.Response(503, json=error_body(503, "unavailable"))

    counted: list[int] = []
    rec = Recorder(sequence(httpx.Response(504, json=error_body(504, "gateway timeout"))), feed=feed_down)
    [out] = await send(client_for(rec, on_unknown=counted.append), make_events(1, generation=2))
    assert len(rec.requests) == 1, "held: never resent blindly"
    assert out.outcome == "unknown" and out.next_key_generation == 2
    assert "HTTP 504" in (out.error or "") and "looked up again" in (out.error or "")
    assert counted == [1]


@pytest.mark.parametrize("status", [408, 502, 503, 504])
async def test_answers_that_leave_the_outcome_open_are_looked_up_before_a_resend(status: int) -> None:
    rec = Recorder(sequence(httpx.Response(status, json=error_body(status, "gateway"))))
    [out] = await send(client_for(rec), make_events(1))
    assert len(rec.lookups) == 1 and len(rec.requests) == 2 and rec.keys()[0] == rec.keys()[1]
    assert out.outcome == "acknowledged"


@pytest.mark.parametrize(
    "failure",
    [
        httpx.Response(409, headers={"Retry-After": "0"}, json=error_body(409, "in flight")),
        httpx.Response(429, headers={"Retry-After": "0"}, json=error_body(429, "API rate limit exceeded")),
        httpx.Response(500, json=error_body(500, "Internal server error")),
        httpx.ConnectError("connection refused"),
    ],
    ids=["409", "429", "500", "connect-error"],
)
async def test_answers_that_say_the_request_was_not_processed_are_retried_without_a_lookup(
    failure: httpx.Response | Exception,
) -> None:
    rec = Recorder(sequence(failure))
    [out] = await send(client_for(rec), make_events(1))
    assert rec.lookups == [] and len(rec.requests) == 2
    assert out.outcome == "acknowledged"


async def test_a_cut_off_bulk_resends_only_the_events_novu_does_not_know() -> None:
    events = make_events(100)
    processed = {e.transaction_id for e in events[:60]}
    rec = Recorder(
        sequence(httpx.RemoteProtocolError("Server disconnected without sending a response.")),
        feed=feed_knows(*processed),
    )
    outcomes = await send(client_for(rec), events)
    assert len(rec.lookups) == 100 and len(rec.requests) == 2
    resent = [e["transactionId"] for e in rec.bodies()[1]["events"]]
    assert resent == [e.transaction_id for e in events[60:]]
    assert rec.keys()[1] == idempotency_key_for(resent, 0), "the resent subset is a request of its own"
    assert [o.transaction_id for o in outcomes] == [e.transaction_id for e in events], "input order"
    assert all(o.outcome == "acknowledged" for o in outcomes)


async def test_not_processed_by_the_feed_with_no_quick_retry_left_is_transient() -> None:
    rec = Recorder(sequence(httpx.ReadTimeout("read timed out")))
    [out] = await send(client_for(rec, quick_retries=0), make_events(1))
    assert len(rec.requests) == 1 and len(rec.lookups) == 1
    assert out.outcome == "transient" and out.next_key_generation == 0


async def test_lookup_asks_the_feed_by_transaction_id_with_the_api_key() -> None:
    events = make_events(3)
    rec = Recorder(novu_ok, feed=feed_knows(events[1].transaction_id))
    async with client_for(rec) as client:
        outcomes = await client.lookup(events)
    assert [o.outcome for o in outcomes] == ["unsent", "acknowledged", "unsent"]
    request = rec.lookups[0]
    assert request.url.path == "/v1/notifications" and request.headers["authorization"] == f"ApiKey {SECRET}"
    assert {r.url.params["transactionId"] for r in rec.lookups} == {e.transaction_id for e in events}
    assert rec.requests == []


@pytest.mark.parametrize(
    "answer",
    [
        httpx.Response(500, json=error_body(500, "down")),
        httpx.Response(200, text="<html>"),
        httpx.Response(200, json={"items": []}),
        httpx.ReadTimeout("slow"),
    ],
    ids=["500", "not-json", "no-data", "timeout"],
)
async def test_a_feed_answer_that_says_nothing_leaves_the_outcome_unknown(answer: httpx.Response | Exception) -> None:
    async def feed(request: httpx.Request) -> httpx.Response:
        if isinstance(answer, Exception):
            raise answer
        return answer

    rec = Recorder(novu_ok, feed=feed)
    async with client_for(rec) as client:
        [out] = await client.lookup(make_events(1))
    assert out.outcome == "unknown" and out.novu_transaction_id is None


async def test_the_fence_gets_the_events_of_the_request_it_guards() -> None:
    seen: list[list[str]] = []

    async def fence(events: Any) -> bool:
        seen.append([e.recipient_id for e in events])
        return True

    await send(
        client_for(Recorder(novu_ok)), make_events(102), concurrency=1, control=SendControl(before_request=fence)
    )
    assert [len(s) for s in seen] == [100, 1, 1]
    assert seen[1] == ["user-0100"]
