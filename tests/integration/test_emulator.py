"""The Novu emulator over real HTTP: the official SDK's contract check plus each emulated behaviour."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import novu_py
import pytest
from novu_py import models
from novu_py.utils import BackoffStrategy, RetryConfig

from xnovu.devtools.emulator import EmulatorConfig, EmulatorServer

KEY = "test-secret"
AUTH = {"Authorization": f"ApiKey {KEY}"}
TRIGGER = "/v1/events/trigger"
BULK = "/v1/events/trigger/bulk"
ISO_MS_Z = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")


@pytest.fixture(scope="module")
def server() -> Iterator[EmulatorServer]:
    with EmulatorServer(secret_key=KEY) as srv:
        yield srv


@pytest.fixture
def client(server: EmulatorServer) -> Iterator[httpx.Client]:
    """A client on a freshly reset emulator (state and config)."""
    with httpx.Client(base_url=server.url, timeout=5) as c:
        c.post("/emulator/reset", json={"config": True}).raise_for_status()
        yield c


def configure(client: httpx.Client, **config: Any) -> dict[str, Any]:
    response = client.post("/emulator/config", json=config)
    response.raise_for_status()
    result: dict[str, Any] = response.json()
    return result


def trigger(client: httpx.Client, body: dict[str, Any], key: str | None = None, **kw: Any) -> httpx.Response:
    headers = {**AUTH, **({"Idempotency-Key": key} if key else {})}
    return client.post(TRIGGER, json=body, headers=headers, **kw)


def stats(client: httpx.Client) -> dict[str, Any]:
    result: dict[str, Any] = client.get("/emulator/stats").json()
    return result


def events(client: httpx.Client) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = client.get("/emulator/events").json()
    return result


def assert_error_body(response: httpx.Response, status: int, message: Any = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert body["statusCode"] == status
    assert ISO_MS_Z.match(body["timestamp"])
    assert body["path"] == response.request.url.raw_path.decode()
    if message is not None:
        assert body["message"] == message
    return body


# -- the official SDK


def test_official_sdk_contract_check_passes(server: EmulatorServer, client: httpx.Client) -> None:
    """docs/novu-contract.md "Requests", verbatim, against the emulator's port."""
    configure(client, rate_limit_rps=60, workflows=["welcome"])
    no_retry = RetryConfig("none", BackoffStrategy(1, 1, 1, 1), False)
    s = models.TriggerEventResponseDtoStatus

    with novu_py.Novu(secret_key="test-secret", server_url=server.url, retry_config=no_retry, timeout_ms=5000) as novu:
        res = novu.trigger(
            trigger_event_request_dto={
                "workflow_id": "welcome",
                "to": {"subscriber_id": "user-1", "email": "u1@example.com"},
                "payload": {"orderId": "o-1"},
                "transaction_id": "tx-o-1",
            },
            idempotency_key="order-o-1",
        )
        assert res.result.acknowledged is True and res.result.status == s.PROCESSED
        assert res.result.transaction_id == "tx-o-1"
        assert "ratelimit-remaining" in {k.lower() for k in res.headers}

        bulk = novu.trigger_bulk(
            bulk_trigger_event_dto={
                "events": [
                    {"workflow_id": "welcome", "to": "user-2"},
                    {"workflow_id": "does-not-exist", "to": "user-3"},
                ]
            }
        )
        a, b = bulk.result
        assert a.status == s.PROCESSED and a.transaction_id
        assert b.status == s.ERROR and b.error == ["workflow_not_found"]

        try:
            novu.trigger_bulk(bulk_trigger_event_dto={"events": [{"workflow_id": "welcome", "to": "u"}] * 101})
            raise AssertionError("expected 422")
        except models.ValidationErrorDto as e:
            assert e.status_code == 422 and "events" in e.data.errors

        try:
            novu.trigger(trigger_event_request_dto={"workflow_id": "does-not-exist", "to": "user-1"})
            raise AssertionError("expected 422")
        except models.NovuError as e:
            assert e.status_code == 422

        assert novu.cancel(transaction_id="unknown").result is False


# -- auth


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({}, "Missing authorization header"),
        ({"Authorization": f"Bearer {KEY}"}, 'Invalid authentication scheme: "Bearer"'),
        ({"Authorization": "ApiKey"}, "Unauthorized"),
        ({"Authorization": "ApiKey wrong"}, "API Key not found"),
    ],
)
def test_bad_credentials_get_401_with_novu_messages(
    client: httpx.Client, headers: dict[str, str], message: str
) -> None:
    response = client.post(TRIGGER, json={"name": "welcome", "to": "u1"}, headers=headers)
    body = assert_error_body(response, 401, message)
    assert body["error"] == "Unauthorized"
    assert events(client) == []


def test_without_a_secret_key_any_non_empty_key_is_accepted_and_keys_scope_idempotency() -> None:
    with EmulatorServer() as srv, httpx.Client(base_url=srv.url, timeout=5) as c:
        body = {"name": "welcome", "to": "u1"}
        for api_key in ("key-a", "key-b"):
            r = c.post(TRIGGER, json=body, headers={"Authorization": f"ApiKey {api_key}", "Idempotency-Key": "k"})
            assert r.status_code == 201 and "Idempotency-Replay" not in r.headers
        assert stats(c)["deliveries"] == 2
        assert c.post(TRIGGER, json=body, headers={"Authorization": "ApiKey"}).status_code == 401


# -- trigger, bulk, cancel, broadcast


def test_trigger_answers_201_with_exactly_a_data_envelope_and_records_one_delivery_per_recipient(
    client: httpx.Client,
) -> None:
    response = trigger(
        client,
        {
            "name": "welcome",
            "to": [{"subscriberId": "user-42", "email": "ada@example.com"}, "user-43"],
            "payload": {"orderId": "o-981"},
            "overrides": {"severity": "high"},
        },
    )
    assert response.status_code == 201
    body = response.json()
    assert list(body) == ["data"]
    data = body["data"]
    assert data["acknowledged"] is True and data["status"] == "processed"
    uuid.UUID(data["transactionId"], version=4)
    delivered = events(client)
    assert [e["subscriberId"] for e in delivered] == ["user-42", "user-43"]
    assert all(e["transactionId"] == data["transactionId"] for e in delivered)
    assert delivered[0]["payload"] == {"orderId": "o-981"}
    assert delivered[0]["workflow"] == "welcome" and delivered[0]["idempotencyKey"] is None
    assert delivered[0]["overrides"] == {"severity": "high"}


def test_received_at_is_iso_8601_utc_with_milliseconds(client: httpx.Client) -> None:
    trigger(client, {"name": "welcome", "to": "u1", "transactionId": "tx-1"}, key="k-1")
    (event,) = events(client)
    assert ISO_MS_Z.match(event["receivedAt"]), event["receivedAt"]
    assert event["transactionId"] == "tx-1" and event["idempotencyKey"] == "k-1"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"to": "u1"}, "name"),
        ({"name": 7, "to": "u1"}, "name"),
        ({"name": "welcome", "to": "u1", "payload": [1]}, "payload"),
        ({"name": "welcome"}, "to"),
        ({"name": "welcome", "to": [f"u{i}" for i in range(101)]}, "to"),
        ({"name": "welcome", "to": {"email": "no-id@example.com"}}, "to"),
    ],
)
def test_invalid_trigger_fields_get_422_with_errors(client: httpx.Client, body: dict[str, Any], field: str) -> None:
    response = trigger(client, body)
    error = assert_error_body(response, 422, "Validation Error")
    assert error["error"] == "Unprocessable Entity"
    assert error["errors"][field]["messages"]
    assert stats(client)["deliveries"] == 0


def test_unknown_workflow_is_422_on_trigger_but_an_error_entry_in_bulk(client: httpx.Client) -> None:
    configure(client, workflows=["welcome"])
    single = trigger(client, {"name": "nope", "to": "u1"})
    assert assert_error_body(single, 422, "workflow_not_found")["error"] == "Unprocessable Entity"

    events_in = [
        {"name": "welcome", "to": "u1", "transactionId": "os-o-1"},
        {"name": "nope", "to": "u2"},
    ]
    bulk = client.post(BULK, json={"events": events_in}, headers=AUTH)
    assert bulk.status_code == 201
    assert bulk.json() == {
        "data": [
            {"acknowledged": True, "status": "processed", "transactionId": "os-o-1"},
            {"acknowledged": True, "status": "error", "error": ["workflow_not_found"]},
        ]
    }
    assert [e["subscriberId"] for e in events(client)] == ["u1"]


@pytest.mark.parametrize(
    ("count", "message"),
    [(101, "events must contain no more than 100 elements"), (0, "events must contain at least 1 elements")],
)
def test_bulk_outside_1_to_100_events_is_422(client: httpx.Client, count: int, message: str) -> None:
    response = client.post(BULK, json={"events": [{"name": "welcome", "to": "u"}] * count}, headers=AUTH)
    body = assert_error_body(response, 422, "Validation Error")
    assert body["errors"] == {"events": {"messages": [message]}}


def test_single_trigger_over_512_kb_is_413(client: httpx.Client) -> None:
    response = trigger(client, {"name": "welcome", "to": "u1", "payload": {"blob": "x" * 524_288}})
    body = assert_error_body(response, 413)
    size = len(response.request.content)
    assert body["message"] == (
        f"Payload size ({size} bytes) exceeds maximum allowed size of 524288 bytes (512KB). "
        "Note: Attachments are excluded from this limit."
    )
    assert stats(client)["deliveries"] == 0


def test_bulk_limit_applies_per_event(client: httpx.Client) -> None:
    small = {"name": "welcome", "to": "u1", "payload": {"blob": "x" * 300_000}}
    ok = client.post(BULK, json={"events": [small, small]}, headers=AUTH)
    assert ok.status_code == 201  # 600 KB in total, but each event is under the limit

    big = {"name": "big-one", "to": "u2", "payload": {"blob": "x" * 524_288}}
    response = client.post(BULK, json={"events": [small, big]}, headers=AUTH)
    body = assert_error_body(response, 413)
    assert re.match(
        r'^Event at index 1 \(workflow: "big-one"\) has payload size \(\d+ bytes\) exceeds maximum '
        r"allowed size of 524288 bytes \(512KB\)\. ",
        body["message"],
    )
    assert stats(client)["deliveries"] == 2


def test_cancel_answers_200_false_and_broadcast_answers_201(client: httpx.Client) -> None:
    cancel = client.delete(f"{TRIGGER}/some-tx", headers=AUTH)
    assert cancel.status_code == 200 and cancel.json() == {"data": False}

    broadcast = client.post(f"{TRIGGER}/broadcast", json={"name": "news", "payload": {"a": 1}}, headers=AUTH)
    assert broadcast.status_code == 201
    assert broadcast.json()["data"]["status"] == "processed"
    (event,) = events(client)
    assert event["workflow"] == "news" and event["broadcast"] is True


def test_bad_json_is_400_and_unknown_route_is_404_in_novu_shape(client: httpx.Client) -> None:
    bad = client.post(TRIGGER, content=b"{not json", headers={**AUTH, "Content-Type": "application/json"})
    assert_error_body(bad, 400)
    assert_error_body(client.post("/v1/events/nope", headers=AUTH), 404)


# -- rate limiting


def test_token_bucket_sends_ratelimit_headers_then_429_with_retry_after(client: httpx.Client) -> None:
    configure(client, rate_limit_rps=2)  # limit 10 per 5 s, burst 11
    first = trigger(client, {"name": "welcome", "to": "u1"})
    assert first.headers["RateLimit-Limit"] == "10"
    assert first.headers["RateLimit-Remaining"] == "10"
    assert first.headers["RateLimit-Policy"] == (
        '10;w=5;burst=11;comment="token bucket";category="trigger";cost="single";serviceLevel="free"'
    )
    assert int(first.headers["RateLimit-Reset"]) >= 0
    for _ in range(10):
        assert trigger(client, {"name": "welcome", "to": "u1"}).status_code == 201
    limited = trigger(client, {"name": "welcome", "to": "u1"})
    assert_error_body(limited, 429, "API rate limit exceeded")
    assert int(limited.headers["Retry-After"]) >= 1
    assert limited.headers["RateLimit-Remaining"] == "0"
    s = stats(client)
    assert s["tokens"] == 11 and s["status_codes"] == {"201": 11, "429": 1}


def test_bulk_costs_100_tokens(client: httpx.Client) -> None:
    configure(client, rate_limit_rps=60)  # burst 330: three bulk calls fit, the fourth does not
    codes = []
    for _ in range(4):
        response = client.post(BULK, json={"events": [{"name": "welcome", "to": "u1"}]}, headers=AUTH)
        codes.append(response.status_code)
    assert codes == [201, 201, 201, 429]
    assert 'cost="bulk"' in response.headers["RateLimit-Policy"]
    assert stats(client)["tokens"] == 300


# -- idempotency


def test_same_key_and_body_replays_without_a_second_delivery(client: httpx.Client) -> None:
    body = {"name": "welcome", "to": "u1"}
    first = trigger(client, body, key="order-1")
    again = trigger(client, body, key="order-1")
    assert first.status_code == again.status_code == 201
    assert first.headers["Idempotency-Key"] == "order-1" and "Idempotency-Replay" not in first.headers
    assert again.headers["Idempotency-Replay"] == "true" and again.headers["Idempotency-Key"] == "order-1"
    assert again.json() == first.json()
    assert stats(client)["deliveries"] == 1


async def test_same_key_while_in_flight_gets_409(server: EmulatorServer, client: httpx.Client) -> None:
    configure(client, latency_ms=400)
    body = {"name": "welcome", "to": "u1"}
    headers = {**AUTH, "Idempotency-Key": "slow-1"}
    async with httpx.AsyncClient(base_url=server.url, timeout=5) as ac:
        first = asyncio.create_task(ac.post(TRIGGER, json=body, headers=headers))
        await asyncio.sleep(0.15)
        second = await ac.post(TRIGGER, json=body, headers=headers)
        done = await first
    assert done.status_code == 201
    assert_error_body(
        second, 409, 'Request with key "slow-1" is currently being processed. Please retry after 1 second'
    )
    assert second.headers["Retry-After"] == "1" and second.headers["Link"].startswith("https://")
    assert second.headers["Idempotency-Key"] == "slow-1"
    assert stats(client)["deliveries"] == 1


def test_same_key_with_a_different_body_is_422(client: httpx.Client) -> None:
    assert trigger(client, {"name": "welcome", "to": "u1"}, key="k").status_code == 201
    reused = trigger(client, {"to": "u1", "name": "welcome"}, key="k")  # key order counts
    assert_error_body(reused, 422, 'Request with key "k" is being reused for a different body')
    assert "Link" in reused.headers
    assert stats(client)["deliveries"] == 1


def test_key_longer_than_255_is_400(client: httpx.Client) -> None:
    key = "k" * 256
    response = trigger(client, {"name": "welcome", "to": "u1"}, key=key)
    assert_error_body(
        response, 400, f'idempotencyKey "{key}" has exceeded the maximum allowed length of 255 characters'
    )


def test_error_responses_are_cached_and_replayed(client: httpx.Client) -> None:
    invalid = trigger(client, {"to": "u1"}, key="bad-1")
    replayed = trigger(client, {"to": "u1"}, key="bad-1")
    assert invalid.status_code == replayed.status_code == 422
    assert replayed.headers["Idempotency-Replay"] == "true" and replayed.json() == invalid.json()

    configure(client, error_rate=1.0)
    failed = trigger(client, {"name": "welcome", "to": "u1"}, key="boom-1")
    configure(client, error_rate=0.0)
    replayed_500 = trigger(client, {"name": "welcome", "to": "u1"}, key="boom-1")
    assert failed.status_code == replayed_500.status_code == 500
    assert replayed_500.headers["Idempotency-Replay"] == "true"
    assert "errorId" in replayed_500.json()
    assert stats(client)["deliveries"] == 0


def test_idempotency_off_ignores_the_header(client: httpx.Client) -> None:
    configure(client, idempotency=False)
    body = {"name": "welcome", "to": "u1"}
    first, second = trigger(client, body, key="k"), trigger(client, body, key="k")
    assert first.status_code == second.status_code == 201
    assert "Idempotency-Key" not in second.headers and "Idempotency-Replay" not in second.headers
    assert stats(client)["deliveries"] == 2


# -- fault injection and inspection


def test_error_rate_answers_500_before_processing(client: httpx.Client) -> None:
    configure(client, error_rate=1.0)
    response = trigger(client, {"name": "welcome", "to": "u1"})
    body = assert_error_body(response, 500, "Internal server error, contact support and provide them with the errorId")
    assert body["errorId"]
    s = stats(client)
    assert s["deliveries"] == 0 and s["status_codes"] == {"500": 1} and s["requests"] == 1


@pytest.mark.parametrize(
    ("status", "message"), [(402, "Payment Required"), (403, "Forbidden resource")]
)
def test_a_configuration_error_status_answers_every_events_request(
    client: httpx.Client, status: int, message: str
) -> None:
    """Novu's configuration errors other than a wrong key (402 plan limit, 403), which no request can provoke."""
    configure(client, config_error_status=status)
    assert_error_body(trigger(client, {"name": "welcome", "to": "u1"}), status, message)
    bulk = client.post(BULK, json={"events": [{"name": "welcome", "to": "u2"}]}, headers=AUTH)
    assert_error_body(bulk, status, message)
    assert_error_body(client.post(TRIGGER, json={"name": "welcome", "to": "u1"}), 401)  # the key is checked first
    s = stats(client)
    assert s["deliveries"] == 0 and s["status_codes"] == {str(status): 2, "401": 1}
    assert feed(client, transactionId="x").status_code == 200, "reads are not refused"
    for bad in (400, 500, True, "402"):
        assert_error_body(client.post("/emulator/config", json={"config_error_status": bad}), 400)
    configure(client, config_error_status=None)
    assert trigger(client, {"name": "welcome", "to": "u1"}).status_code == 201


def test_timeout_rate_processes_but_answers_too_late_then_replays(client: httpx.Client) -> None:
    configure(client, timeout_rate=1.0, timeout_delay_s=3)
    body = {"name": "welcome", "to": "u1", "transactionId": "tx-slow"}
    with pytest.raises(httpx.ReadTimeout):
        trigger(client, body, key="slow-key", timeout=0.5)
    s = stats(client)
    assert s["deliveries"] == 1 and s["status_codes"] == {"201": 1}

    configure(client, timeout_rate=0.0)
    retry = trigger(client, body, key="slow-key")
    assert retry.status_code == 201 and retry.headers["Idempotency-Replay"] == "true"
    assert stats(client)["deliveries"] == 1


def test_seeded_error_rate_is_reproducible(client: httpx.Client) -> None:
    def run() -> list[int]:
        configure(client, error_rate=0.5, seed=7)
        return [trigger(client, {"name": "welcome", "to": "u1"}).status_code for _ in range(12)]

    first = run()
    assert first == run() and set(first) == {201, 500}


def test_same_transaction_and_subscriber_twice_counts_a_duplicate_delivery(client: httpx.Client) -> None:
    body = {"name": "welcome", "to": ["u1", "u2"], "transactionId": "tx-dup"}
    trigger(client, body)
    trigger(client, body)
    trigger(client, {**body, "transactionId": "tx-other"})
    s = stats(client)
    assert s["deliveries"] == 6 and s["duplicate_deliveries"] == 2


def test_reset_clears_state_and_keeps_config_unless_asked(client: httpx.Client) -> None:
    configure(client, rate_limit_rps=2, workflows=["welcome"])
    trigger(client, {"name": "welcome", "to": "u1"}, key="r-1")
    client.post("/emulator/reset").raise_for_status()
    assert stats(client) == {
        "requests": 0,
        "tokens": 0,
        "deliveries": 0,
        "duplicate_deliveries": 0,
        "feed_lookups": 0,
        "status_codes": {},
    }
    assert events(client) == []
    again = trigger(client, {"name": "welcome", "to": "u1"}, key="r-1")
    assert "Idempotency-Replay" not in again.headers  # key cache cleared
    assert again.headers["RateLimit-Remaining"] == "10"  # bucket refilled, config kept
    client.post("/emulator/reset", json={"config": True}).raise_for_status()
    assert client.get("/emulator/config").json() == {
        "error_rate": 0.0,
        "timeout_rate": 0.0,
        "timeout_delay_s": 30.0,
        "latency_ms": 0,
        "rate_limit_rps": None,
        "idempotency": True,
        "workflows": None,
        "seed": None,
        "feed_delay_ms": 0,
        "feed_error_rate": 0.0,
        "config_error_status": None,
    }


def test_config_round_trips_and_rejects_bad_values(client: httpx.Client) -> None:
    posted = configure(client, error_rate=0.25, latency_ms=5, workflows=["a", "b"], idempotency=False)
    assert posted == client.get("/emulator/config").json()
    assert posted["error_rate"] == 0.25 and posted["workflows"] == ["a", "b"] and posted["idempotency"] is False
    assert posted["timeout_delay_s"] == 30.0  # untouched fields keep their values
    for bad in ({"error_rate": 2}, {"idempotency": "yes"}, {"workflows": "a"}, {"no_such": 1}):
        assert_error_body(client.post("/emulator/config", json=bad), 400)
    assert client.get("/emulator/config").json() == posted
    assert client.get("/emulator/health").status_code == 200
    assert EmulatorConfig().rate_limit_rps is None


# -- the activity feed (docs/novu-contract.md "Unknown outcomes")

FEED = "/v1/notifications"


def feed(client: httpx.Client, **params: Any) -> httpx.Response:
    return client.get(FEED, params=params, headers=AUTH)


def test_the_activity_feed_lists_processed_events_by_transaction_id(client: httpx.Client) -> None:
    trigger(client, {"name": "welcome", "to": ["u1", "u2"], "transactionId": "tx-feed"})
    trigger(client, {"name": "welcome", "to": "u3", "transactionId": "tx-other"})
    response = feed(client, transactionId="tx-feed")
    assert response.status_code == 200
    body = response.json()
    assert body["page"] == 0 and body["pageSize"] == 10 and body["hasMore"] is False
    assert sorted(e["subscriber"]["subscriberId"] for e in body["data"]) == ["u1", "u2"]
    assert {e["transactionId"] for e in body["data"]} == {"tx-feed"}
    assert all(e["template"]["triggers"][0]["identifier"] == "welcome" and e["_id"] for e in body["data"])
    assert feed(client, transactionId="tx-never").json()["data"] == []
    assert stats(client)["feed_lookups"] == 2 and stats(client)["requests"] == 2, "reads are not trigger requests"


def test_the_activity_feed_paginates_and_filters_by_subscriber(client: httpx.Client) -> None:
    trigger(client, {"name": "welcome", "to": [f"u{i}" for i in range(5)], "transactionId": "tx-many"})
    first = feed(client, transactionId="tx-many", limit=2).json()
    last = feed(client, transactionId="tx-many", limit=2, page=2).json()
    assert len(first["data"]) == 2 and first["hasMore"] is True and first["pageSize"] == 2
    assert len(last["data"]) == 1 and last["hasMore"] is False and last["page"] == 2
    only = feed(client, transactionId="tx-many", subscriberIds="u3").json()["data"]
    assert [e["subscriber"]["subscriberId"] for e in only] == ["u3"]
    assert_error_body(feed(client, limit=0), 422)


def test_the_activity_feed_needs_the_api_key(client: httpx.Client) -> None:
    assert_error_body(client.get(FEED, params={"transactionId": "x"}), 401, "Missing authorization header")
    bad = client.get(FEED, params={"transactionId": "x"}, headers={"Authorization": "ApiKey wrong"})
    assert_error_body(bad, 401, "API Key not found")


def test_an_event_answered_too_late_is_in_the_feed_once_processed(client: httpx.Client) -> None:
    """The fault the feed exists for: processed, answer lost; the feed shows it after Novu's processing lag."""
    configure(client, timeout_rate=1.0, timeout_delay_s=3, feed_delay_ms=800, idempotency=False)
    with pytest.raises(httpx.ReadTimeout):
        trigger(client, {"name": "welcome", "to": "u1", "transactionId": "tx-late"}, timeout=0.2)
    assert feed(client, transactionId="tx-late").json()["data"] == [], "not yet processed by Novu's worker"
    time.sleep(0.8)
    [entry] = feed(client, transactionId="tx-late").json()["data"]
    assert entry["subscriber"]["subscriberId"] == "u1"


def test_a_feed_error_rate_answers_500(client: httpx.Client) -> None:
    configure(client, feed_error_rate=1.0)
    assert_error_body(feed(client, transactionId="x"), 500)
    configure(client, feed_error_rate=0.0)
    assert feed(client, transactionId="x").status_code == 200
