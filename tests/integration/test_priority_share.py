"""Fair share across urgency levels, the due backlog's urgent alert and the fairness probe's bound (issue 17,
docs/priority.md), on the real stack. Each test failed on the code before its fix (findings of the attack on issue
17). Fixtures of tests/integration/test_priority_claims.py."""

from __future__ import annotations

from tests.integration.test_priority_claims import LIMITS, _claim, _priority, _rows
from tests.support import Env

A = "aaaaaaaa-0000-4000-8000-000000000001"


async def test_a_less_urgent_row_of_an_enterprise_does_not_overtake_its_more_urgent_ones(env: Env) -> None:
    """A alone fills the normal window (20 rows). Its further normal rows wait, and so do its rows below normal:
    they are the same enterprise in the same class, whose share is the whole window, not a group of their own."""
    wf = await env.workflow("welcome")
    low = await _priority(env, "digest", -1)
    await _rows(env, wf, 20, enterprise=A)
    assert len(await _claim(env, batch=20)) == 20
    await _rows(env, wf, 5, enterprise=A)
    lows = await _rows(env, wf, 5, enterprise=A, priority=low)
    got = await _claim(env, batch=10)
    in_flight = await env.repo.pool.fetchval(
        "SELECT count(*) FROM notify.ent_notification WHERE notification_status = 'PROCESSING'"
    )
    assert not set(got) & set(lows), "A's below-normal rows overtook its normal ones"
    assert in_flight == LIMITS.max_rows, "a group alone never goes beyond the window"
