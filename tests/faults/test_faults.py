"""The fault suite (ops/faults) under pytest, smaller: one test per scenario, 200 rows each (`pytest -m slow`).

Each test runs one scenario of `ops/faults/scenarios.py` on a stack of its own module (embedded Postgres, Temporal
dev server, emulator subprocess) with real worker subprocesses, and asserts the suite's targets: no row lost, no
duplicate delivery, no row stuck.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.ops_modules import load_ops_module

N = 200

pytestmark = pytest.mark.slow


sc = load_ops_module("xnovu_faults_scenarios", "ops/faults/scenarios.py")


@pytest.fixture(scope="module")
def fault_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    stack = sc.FaultStack(tmp_path_factory.mktemp("faults"))
    try:
        stack.start()
        yield stack
    finally:
        stack.stop()


KNOWN_BUGS: dict[str, pytest.MarkDecorator] = {}


@pytest.mark.parametrize(
    "key",
    [pytest.param(key, marks=KNOWN_BUGS.get(key, ()), id=s.name) for key, s in sc.SCENARIOS.items()],
)
@pytest.mark.timeout(400)
async def test_fault_scenario(fault_stack: Any, key: str) -> None:
    lines: list[str] = []
    result = await sc.run_scenario(fault_stack, sc.SCENARIOS[key], N, timeout_s=180, say=lines.append)
    report = "\n".join(lines) + f"\n{result.as_dict()}"
    assert result.error is None, report
    assert not result.timed_out, report
    assert result.lost == 0, report
    assert result.duplicates == 0 and result.duplicate_events == 0, report
    assert result.stuck == 0, report
    assert result.sent + result.failed == result.n, report
    assert result.ok, report
