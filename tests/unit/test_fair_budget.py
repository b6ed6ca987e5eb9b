"""The order in which a process serves waiters for Novu tokens (xnovu/novu/fairqueue.py, docs/priority.md "The token
budget"): most urgent first; within an urgency, enterprises share tokens by weighted fair queueing; within one,
notifications take turns request by request; within a notification, FIFO."""

from __future__ import annotations

import time

import pytest

from xnovu.core.weights import parse_weights, weight_of
from xnovu.novu.fairqueue import LARGEST_REQUEST, FairQueue

A = "aaaaaaaa-0000-4000-8000-000000000001"
B = "bbbbbbbb-0000-4000-8000-000000000002"
C = "cccccccc-0000-4000-8000-000000000003"


def drain(queue: FairQueue) -> list[tuple[int, str, int]]:
    """Serve everything; (urgency, group, seq) in the order served."""
    order = []
    while (w := queue.head()) is not None:
        queue.served(w)
        order.append((w.urgency, w.group, w.seq))
    return order


def test_an_urgent_waiter_is_served_before_every_normal_one_queued_ahead_of_it() -> None:
    q = FairQueue()
    for _ in range(1_000):  # ~17 minutes of budget at 60 tokens/s, queued first
        q.push(1, 0, A)
    urgent = q.push(1, 2, B)
    assert q.head() is urgent


def test_urgencies_are_served_highest_first_and_fifo_within_one_enterprise() -> None:
    q = FairQueue()
    pushed = [q.push(1, u, A) for u in (0, 1, 0, 2, 1, -1)]
    assert [(u, s) for u, _, s in drain(q)] == [(2, 3), (1, 1), (1, 4), (0, 0), (0, 2), (-1, 5)]
    assert len(pushed) == 6 and len(q) == 0


def test_enterprises_share_tokens_equally_whatever_their_backlog() -> None:
    q = FairQueue()
    for _ in range(3_000):
        q.push(1, 0, A)  # a campaign queued first
    for _ in range(100):
        q.push(1, 0, B)
    served = [g for _, g, _ in drain(q)]
    # A and B alternate: B's 100 requests are served among A's first 100, not after A's 3 000.
    last_b = max(i for i, g in enumerate(served) if g == B)
    assert last_b <= 200


def test_shares_are_by_tokens_so_bulk_requests_do_not_take_more_than_their_share() -> None:
    q = FairQueue()
    for _ in range(50):
        q.push(100, 0, A)  # bulk requests
    for _ in range(5_000):
        q.push(1, 0, B)  # singles
    tokens = {A: 0.0, B: 0.0}
    for _ in range(2_000):
        w = q.head()
        assert w is not None
        q.served(w)
        tokens[w.group] += w.cost
    assert tokens[A] == pytest.approx(tokens[B], rel=0.1)


def test_weights_split_tokens_in_proportion() -> None:
    q = FairQueue(parse_weights(f"{A}=3,{B}=1"))
    for _ in range(4_000):
        q.push(1, 0, A)
        q.push(1, 0, B)
    tokens = {A: 0, B: 0}
    for _ in range(4_000):
        w = q.head()
        assert w is not None
        q.served(w)
        tokens[w.group] += 1
    assert tokens[A] / tokens[B] == pytest.approx(3.0, rel=0.05)


def test_the_budget_groups_enterprises_as_the_weights_name_them() -> None:
    from xnovu.core import weights
    from xnovu.novu import fairqueue

    for enterprise in (None, "", A, A.upper()):
        assert fairqueue.group_of(enterprise) == weights.group_of(enterprise)


def test_rows_without_an_enterprise_form_one_group() -> None:
    q = FairQueue(parse_weights("none=2"))
    w = q.push(1, 0, None)
    assert w.group == "none"
    assert weight_of(parse_weights("none=2"), None) == 2.0
    assert weight_of(parse_weights("none=2"), A.upper()) == 1.0


def test_head_is_stable_until_something_changes() -> None:
    q = FairQueue()
    for g in (A, B, C):
        q.push(150, 0, g)  # equal finishes: the tie is broken the same way every time
    first = q.head()
    assert first is not None and all(q.head() is first for _ in range(5))


def test_a_waiter_that_gives_up_leaves_without_charge_and_others_go_on() -> None:
    q = FairQueue()
    a1, a2 = q.push(1, 0, A), q.push(1, 0, A)
    b1 = q.push(1, 0, B)
    q.remove(a1)
    assert q.head() is a2
    q.remove(a2)
    assert q.head() is b1
    q.remove(b1)
    assert q.head() is None and len(q) == 0
    q.remove(b1)  # twice is harmless


def test_an_enterprise_gets_no_credit_for_the_time_it_had_nothing_waiting() -> None:
    q = FairQueue()
    q.served(q.push(1, 0, B))  # B was served once, then idle
    for _ in range(500):
        q.push(1, 0, A)
    for _ in range(10):
        drained = q.head()
        assert drained is not None
        q.served(drained)
    for _ in range(500):
        q.push(1, 0, B)
    served = [g for _, g, _ in drain(q)]
    # From B's return on they alternate: B does not get the 10 tokens A took while B was idle.
    assert all(served[i : i + 2].count(B) == 1 for i in range(0, 400, 2))


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("x=1", "not an enterprise id"),
        (f"{A}", "not enterprise=weight"),
        (f"{A}=0", "above 0"),
        (f"{A}=abc", "not a number"),
        (f"{A}=1,{A.upper()}=2", "named twice"),
    ],
)
def test_bad_weights_are_refused_with_the_reason(text: str, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        parse_weights(text)


def test_extreme_weights_are_clamped_so_choosing_the_next_waiter_stays_quick() -> None:
    """FAIR_SHARE_WEIGHTS refuses weights outside 0.001..1000 (Temporal's range); a mapping given to the queue
    directly is clamped to that range."""
    for text in (f"{A}=0.000001", f"{B}=1000000"):
        with pytest.raises(ValueError, match=r"from 0\.001 to 1000"):
            parse_weights(text)
    q = FairQueue({A: 0.000001, B: 1_000_000.0})
    lone = q.push(100, 0, A)  # alone, at the smallest weight: served next all the same
    started = time.perf_counter()
    assert q.head() is lone
    assert time.perf_counter() - started < 0.05
    q.served(lone)
    q = FairQueue({B: 1_000_000.0})
    for _ in range(20_000):
        q.push(1, 0, B)
    q.push(1, 0, C)
    served = [g for _, g, _ in drain(q)]
    assert served.index(C) <= 1_000  # B's weight is capped at 1 000: C's share is 1/1 001


def test_within_an_enterprise_notifications_take_turns_so_a_big_one_does_not_hold_back_small_ones() -> None:
    """A notification of 50 000 recipients queues hundreds of bulk requests at once; the small rows of the same
    enterprise claimed beside it are served between them, one request each turn, not after all of them."""
    q = FairQueue()
    big = [q.push(100, 0, A, notification=1) for _ in range(50)]
    small = [q.push(1, 0, A, notification=n) for n in range(2, 7)]
    order = [w for w in iter(q.head, None) if q.served(w) is None]
    assert order[0] is big[0]
    assert order[1:6] == small, "each small notification's request comes before the big one's second"
    assert order[6:] == big[1:], "the big notification's requests keep their order"


def test_urgency_then_enterprise_shares_then_notification_turns() -> None:
    """The three levels together: urgent first; within an urgency, A and B share tokens whatever A's notifications;
    within A, the small notification is not behind the big one's backlog."""
    q = FairQueue()
    for _ in range(30):
        q.push(100, 0, A, notification="a-big")
    a_small = q.push(1, 0, A, notification="a-small")
    b = [q.push(1, 0, B, notification=f"b{i}") for i in range(50)]
    urgent = q.push(1, 1, B, notification="fire")
    served = [w for w in iter(q.head, None) if q.served(w) is None]
    assert served[0] is urgent
    tokens_before_last_b = sum(w.cost for w in served[: served.index(b[-1])] if w.group == A)
    assert tokens_before_last_b <= LARGEST_REQUEST, "B's 50 tokens are served beside A's, not after A's 3 000"
    of_a = [w for w in served if w.group == A]
    assert of_a.index(a_small) == 1, "A's small row goes right after the big one's first request, not after 30"


def test_a_weight_1000_enterprise_does_not_keep_a_weight_1_one_waiting_for_100_000_tokens() -> None:
    """HEAVY (weight 1000, the top of the range) has 2 000 bulk requests queued; LIGHT (weight 1) asks for one token.
    Its share is 1/1 001 of the budget: its request finishes at virtual time 1, after about ten of HEAVY's (0.1
    each), some 1 000 tokens. Turns of 100 x weight tokens kept it waiting for 100 000 (28 minutes at 60 tokens/s)."""
    q = FairQueue({A: 1000.0})
    for _ in range(2_000):
        q.push(100, 0, A, notification="campaign")
    light = q.push(1, 0, B, notification="password-reset")
    before = 0.0
    while (w := q.head()) is not light:
        assert w is not None
        q.served(w)
        before += w.cost
    assert before <= 1_000 + LARGEST_REQUEST  # ten of HEAVY's, or eleven as float rounding breaks the tie


def test_a_bulk_request_is_not_starved_by_another_enterprises_singles_arriving_one_by_one() -> None:
    """The head waiter sleeps for 100 tokens while B's singles keep arriving: B overtakes it up to B's share (its
    singles finish earlier), then the bulk request goes."""
    q = FairQueue()
    bulk = q.push(100, 0, A)
    overtook = 0
    while (w := q.head()) is not bulk:
        assert w is not None and overtook <= LARGEST_REQUEST
        q.served(w)
        overtook += 1
        q.push(1, 0, B)  # the next single arrives as soon as the previous one is served
    assert overtook <= LARGEST_REQUEST


def test_asking_one_request_at_a_time_does_not_reset_what_an_enterprise_took() -> None:
    """C has one request waiting at a time, the next arriving as the previous is served; A has a backlog. C gets its
    share, not every token: its next request starts where its last one finished."""
    q = FairQueue()
    for _ in range(1_000):
        q.push(1, 0, A)
    q.push(1, 0, C)
    served = []
    for _ in range(200):
        w = q.head()
        assert w is not None
        q.served(w)
        served.append(w.group)
        if w.group == C:
            q.push(1, 0, C)
    assert served.count(C) == pytest.approx(100, abs=1)
