"""The walking pipeline on the real stack: outbox row → schedule → poll → child workflow → Novu → SENT."""

from __future__ import annotations

from tests.support import Env, eventually


async def test_published_notification_with_several_recipients_is_sent_once_each(env: Env) -> None:
    wf = await env.workflow("welcome", channels=("IN_APP", "EMAIL"))
    [nid] = await env.insert(wf, recipients=3, payload={"hello": "world"})
    async with env.worker():
        await eventually(lambda: env.all_in([nid], "SENT"), timeout=30)
    row = await env.row(nid)
    assert row["attempts"] == 1
    assert row["processed_at"] is not None
    assert row["channels"] == ["IN_APP", "EMAIL"]
    details = row["error_details"]
    assert details["successCount"] == 3 and details["totalRecipients"] == 3
    assert len(details["novu_transaction_ids"]) == 3
    assert all(r["success"] for r in details["results"])
    deliveries = env.deliveries()
    assert len(deliveries) == 3
    assert {d["subscriberId"] for d in deliveries} == {str(r) for r in row["recipients"]}
    assert all(d["payload"] == {"hello": "world"} and d["workflow"] == "welcome" for d in deliveries)
    assert all(d["transactionId"] == f"xnovu-{nid}-{d['subscriberId']}" for d in deliveries)
    assert env.stats()["duplicate_deliveries"] == 0
