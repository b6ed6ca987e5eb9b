"""The claim's selection rules (xnovu/core/fairshare.py, docs/priority.md "Claims"), without a database."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from xnovu.core.fairshare import Candidate, ClaimLimits, InFlight, has_room, select
from xnovu.core.weights import parse_weights

T0 = datetime(2026, 1, 1, tzinfo=UTC)
A = "aaaaaaaa-0000-4000-8000-000000000001"
B = "bbbbbbbb-0000-4000-8000-000000000002"
C = "cccccccc-0000-4000-8000-000000000003"
LIMITS = ClaimLimits(max_rows=100, max_tokens=600)


def rows(enterprise: str | None, n: int, *, first: int, level: int = 0, tokens: int = 1, retry: bool = False,
         start: datetime = T0) -> list[Candidate]:
    return [
        Candidate(first + i, level, enterprise, start + timedelta(seconds=i), tokens, retry) for i in range(n)
    ]


def test_due_rows_are_taken_highest_urgency_first_then_by_due_time() -> None:
    normal = rows(None, 3, first=1, start=T0)
    urgent = rows(None, 2, first=10, level=2, start=T0 + timedelta(hours=1))
    low = rows(None, 2, first=20, level=-1, start=T0 - timedelta(hours=1))
    assert select([*normal, *low, *urgent], [], LIMITS, batch_size=10) == [10, 11, 1, 2, 3, 20, 21]


def test_an_urgent_row_is_admitted_while_normal_work_fills_the_window() -> None:
    full = [InFlight(0, A, False, rows=100, tokens=600)]
    urgent = rows(B, 1, first=1, level=1)
    normal = rows(B, 1, first=2)
    assert select([*urgent, *normal], full, LIMITS, batch_size=10) == [1, 2]  # 2: B is below its share
    assert select([*urgent, *rows(A, 1, first=3)], full, LIMITS, batch_size=10) == [1], "A is at its share"


def test_urgent_work_has_a_window_of_its_own_and_never_takes_the_normal_one() -> None:
    urgent_full = [InFlight(1, A, False, rows=100, tokens=600)]
    assert select(rows(A, 1, first=1, level=1), urgent_full, LIMITS, batch_size=10) == []
    assert select(rows(A, 1, first=2), urgent_full, LIMITS, batch_size=10) == [2]


def test_enterprises_interleave_within_a_level_instead_of_oldest_first() -> None:
    backlog = rows(A, 50, first=1, start=T0)  # A's rows are all older
    b = rows(B, 5, first=100, start=T0 + timedelta(minutes=5))
    got = select([*backlog, *b], [], LIMITS, batch_size=10)
    assert Counter("A" if i < 100 else "B" for i in got) == {"A": 5, "B": 5}
    assert got[:2] == [1, 100], "alternating, each group in its due order"


def test_an_enterprise_with_work_in_flight_yields_to_one_without() -> None:
    flight = [InFlight(0, A, False, rows=20, tokens=20)]
    got = select([*rows(A, 30, first=1), *rows(B, 30, first=100)], flight, LIMITS, batch_size=30)
    assert Counter("A" if i < 100 else "B" for i in got) == {"B": 25, "A": 5}


def test_weights_split_a_claim_in_their_proportion() -> None:
    got = select([*rows(A, 100, first=1), *rows(B, 100, first=1000)], [], LIMITS, batch_size=40,
                 weights={A: 3.0})
    assert Counter("A" if i < 1000 else "B" for i in got) == {"A": 30, "B": 10}


def test_an_enterprise_below_its_share_is_admitted_beyond_a_window_others_fill_within_twice_the_window() -> None:
    full = [InFlight(0, A, False, rows=10, tokens=600)]
    got = select(rows(B, 1000, first=1), full, LIMITS, batch_size=1000)
    assert len(got) == 50, "B's share (half of the 100 rows) in the headroom"
    three = [InFlight(0, A, False, rows=10, tokens=600), InFlight(0, C, False, rows=10, tokens=600)]
    assert select(rows(B, 1000, first=1), three, LIMITS, batch_size=1000) == [], "twice the window is the bound"


def test_one_group_alone_never_goes_beyond_the_window() -> None:
    """What the scheduled poll's bound rests on: without others there is no fair-share headroom."""
    got = select(rows(None, 60, first=1), [InFlight(0, None, False, rows=2, tokens=2)], ClaimLimits(5, 100),
                 batch_size=100)
    assert got == [1, 2, 3]


def test_a_less_urgent_row_of_an_enterprise_does_not_overtake_its_more_urgent_ones() -> None:
    """A alone fills the window: its share is the whole window, at every level of the class at once."""
    limits = ClaimLimits(max_rows=20, max_tokens=100)
    full = [InFlight(0, A, False, rows=20, tokens=20)]
    assert select([*rows(A, 5, first=1), *rows(A, 5, first=10, level=-1)], full, limits, batch_size=10) == []


def test_an_enterprise_does_not_multiply_its_share_by_spreading_rows_over_levels() -> None:
    """A and B fill the window half each: each is at its share, whatever levels A's further rows are at."""
    limits = ClaimLimits(max_rows=20, max_tokens=1_000)
    full = [InFlight(0, A, False, rows=10, tokens=10), InFlight(0, B, False, rows=10, tokens=10)]
    spread = [*rows(A, 5, first=1, level=-1), *rows(A, 5, first=10, level=-2), *rows(A, 5, first=20, level=-3)]
    assert select(spread, full, limits, batch_size=20) == []
    assert len(select(rows(C, 20, first=100, level=-2), full, limits, batch_size=20)) == 20 // 3, "C's third"


def test_a_refused_row_holds_back_its_enterprise_at_lower_levels_but_not_other_enterprises() -> None:
    limits = ClaimLimits(max_rows=10, max_tokens=100)
    live = [InFlight(0, A, False, rows=1, tokens=60)]
    big = Candidate(1, 0, A, T0, 50)  # does not fit: 110 tokens
    small = [Candidate(2, -1, A, T0, 1), Candidate(3, -1, B, T0, 1)]  # would fit
    assert select([big, *small], live, limits, batch_size=10) == [3]


def test_within_a_level_the_enterprise_with_less_in_flight_across_the_class_goes_first() -> None:
    flight = [InFlight(0, A, False, rows=5, tokens=5)]
    got = select([*rows(A, 5, first=1, level=-1), *rows(B, 5, first=10, level=-1)], flight, LIMITS, batch_size=5)
    assert got == [10, 11, 12, 13, 14], "B catches up with A's normal rows in flight before A's next row"


def test_rows_without_an_enterprise_form_one_group() -> None:
    got = select([*rows(None, 10, first=1), *rows(A, 10, first=100)], [], LIMITS, batch_size=4)
    assert Counter("none" if i < 100 else "A" for i in got) == {"none": 2, "A": 2}


def test_a_big_row_counts_half_the_window_so_others_are_claimed_beside_it() -> None:
    limits = ClaimLimits(max_rows=10, max_tokens=100)
    big = Candidate(1, 0, None, T0, 1_000, retry=True)
    small = rows(None, 5, first=2, start=T0 + timedelta(minutes=1), retry=True)
    live = [InFlight(0, None, False, rows=1, tokens=1)]
    assert select([big, *small], live, limits, batch_size=10) == [1, 2, 3, 4, 5, 6]
    assert limits.cost(1_000) == 50


def test_a_row_bigger_than_the_window_is_claimed_alone_when_nothing_is_in_flight() -> None:
    limits = ClaimLimits(max_rows=10, max_tokens=1)
    assert select([Candidate(1, 0, None, T0, 5_000)], [], limits, batch_size=10) == [1]
    assert select([Candidate(1, 0, None, T0, 5_000), Candidate(2, 0, None, T0, 1)], [], limits, batch_size=10) == [1]


def test_a_refused_row_is_not_overtaken_by_its_own_group() -> None:
    limits = ClaimLimits(max_rows=10, max_tokens=100)
    live = [InFlight(0, None, False, rows=1, tokens=60)]
    got = select([Candidate(1, 0, None, T0, 50), *rows(None, 3, first=2, start=T0 + timedelta(seconds=1))], live,
                 limits, batch_size=10)
    assert got == []


def test_retries_get_a_share_beside_new_work_that_fills_the_window() -> None:
    full = [InFlight(0, None, False, rows=100, tokens=600)]
    got = select(rows(None, 200, first=1, retry=True), full, LIMITS, batch_size=200)
    assert len(got) == 50, "half the window's rows: the retry lane's share beside the new lane"


def test_urgent_room_is_reported_while_only_the_normal_window_is_full() -> None:
    full = [InFlight(0, A, False, rows=100, tokens=600)]
    assert has_room(full, [], LIMITS, urgent=True) and not has_room(full, [], LIMITS, urgent=False)
    urgent_full = [*full, InFlight(2, B, False, rows=99, tokens=10)]
    assert has_room(urgent_full, [], LIMITS, urgent=True)
    assert not has_room(urgent_full, rows(B, 1, first=1, level=2), LIMITS, urgent=True), "the row just claimed counts"
    big = rows(B, 1, first=2, level=1, tokens=5_000)  # counts half the token window
    assert has_room([], big, LIMITS, urgent=True) and not has_room([], big * 2, LIMITS, urgent=True)


def test_the_batch_size_bounds_a_claim() -> None:
    assert len(select(rows(A, 50, first=1), [], LIMITS, batch_size=7)) == 7


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("abc=1", "not an enterprise id"),
        (f"{A}", "not enterprise=weight"),
        (f"{A}=x", "not a number"),
        (f"{A}=0", "above 0"),
        (f"{A}=0.0001", r"from 0\.001 to 1000"),
        (f"{A}=1000000", r"from 0\.001 to 1000"),
        (f"{A}=1,{A}=2", "named twice"),
    ],
)
def test_bad_weights_say_what_is_wrong(text: str, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        parse_weights(text)


def test_weights_parse() -> None:
    assert parse_weights(f" {A.upper()}=3, none=0.5 ,") == {A: 3.0, "none": 0.5}
    assert parse_weights("") == {}


def test_the_rows_window_is_a_few_rows_per_slot_of_the_fleet_never_below_the_workers_own_nor_above_max_rows() -> None:
    limits = ClaimLimits(max_rows=50, max_tokens=600, rows_per_slot=2, own_slots=4)
    assert limits.for_fleet(0).max_rows == 8, "no worker seen (this one's row not written yet): its own slots"
    assert limits.for_fleet(3).max_rows == 8
    assert limits.for_fleet(12).max_rows == 24
    assert limits.for_fleet(1_000).max_rows == 50, "the batches part still bounds it"
    assert limits.for_fleet(12).for_fleet(1_000).max_rows == 24, "applied once"
    plain = ClaimLimits(max_rows=50, max_tokens=600)
    assert plain.for_fleet(1_000) == plain
