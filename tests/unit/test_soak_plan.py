"""The soak's plan (ops/soak/plan.py) is a function of (seed, minutes) only, and stays within its knobs."""

from __future__ import annotations

import pytest

from tests.ops_modules import load_ops_module

plan_module = load_ops_module("xnovu_soak_plan", "ops/soak/plan.py")


@pytest.mark.parametrize("seed", [1, 2, 3, 7, 1234])
def test_a_seed_gives_the_same_plan_every_time(seed: int) -> None:
    first = plan_module.make_plan(seed, 0.75)
    second = plan_module.make_plan(seed, 0.75)
    assert first == second
    assert first != plan_module.make_plan(seed + 1, 0.75)


@pytest.mark.parametrize("minutes", [0.75, 5, 60])
def test_plans_stay_within_their_knobs(minutes: float) -> None:
    for seed in range(50):
        p = plan_module.make_plan(seed, minutes)
        assert p.workers in (2, 3)
        assert 10 <= p.rps <= 600
        assert 5000 <= p.lease_ms <= 15000
        assert p.inserts and all(1 <= n <= 5000 for i in p.inserts for n in i.recipients)
        assert all(0 <= i.at_s <= p.load_s for i in p.inserts)
        assert all(0 < f.at_s < p.load_s for f in p.faults)
        kinds = {f.kind for f in p.faults}
        assert "kill" in kinds and kinds <= set(plan_module.FAULT_KINDS)
        # At least two workflows are never deleted, so most rows are still sent.
        assert sum(f.kind == "wf_delete" for f in p.faults) <= len(plan_module.WORKFLOWS) - 2


def test_every_fault_kind_and_big_rows_occur_across_seeds() -> None:
    plans = [plan_module.make_plan(seed, 0.75) for seed in range(100)]
    assert {f.kind for p in plans for f in p.faults} == set(plan_module.FAULT_KINDS)
    assert any(p.biggest_row >= 1000 for p in plans)
    assert any(not p.idempotency for p in plans) and any(p.idempotency for p in plans)
    assert any(p.pooler for p in plans)
