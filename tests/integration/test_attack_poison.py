"""A fresh-context attack review of issue 16's change: a poison row in a poll's claim.

Each test failed on the change before its fix (the fixing commit names the review's finding); findings still
open are marked xfail with the reason (docs/failure-modes.md).

Run: pytest tests/integration/test_attack_poison.py --basetemp=/tmp/pt-attack
"""

from __future__ import annotations

import asyncio

from tests.support import Env
from xnovu.db.repository import NewNotification, insert_notifications


async def test_a_row_with_a_huge_name_does_not_stall_its_batch_mates(env: Env) -> None:
    """Finding (I5/I7): the claim's result (every claimed row with its name) is one local-activity marker, and each
    child start carries the name in its memo. A producer's row whose `name` is 3 MB makes the poll's workflow task
    fail on Temporal's payload limit (2 MB) on every try; the rows claimed with it in that batch are PROCESSING,
    unstarted, counted in flight until their lease runs out, and then recovered together with it again."""
    wf = await env.workflow("welcome")
    [poison] = await insert_notifications(
        env.repo, wf, [NewNotification("x" * 3_000_000, ["6b0e9d1e-1c1d-4b0e-9f1e-000000000001"], {})]
    )
    good = await env.insert(wf, 5)
    async with env.worker(processing_lease_ms=60_000):
        for _ in range(40):
            if await env.all_in(good, "SENT"):
                break
            await asyncio.sleep(1)
        later = await env.insert(wf, 3)  # inserted after: the poll kind must not be stuck (its run completes)
        for _ in range(20):
            if await env.all_in(later, "SENT"):
                break
            await asyncio.sleep(1)
        after = await env.statuses(later)
    states = await env.statuses([poison, *good])
    print(f"\nstates: {states}; rows inserted later: {after}")
    assert all(states[i] == "SENT" for i in good), "the 5 good rows claimed with the poison row were never sent"
    assert all(s == "SENT" for s in after.values()), "rows inserted after the poison row were never sent"
