"""The fault suite (ops/faults) under pytest, smaller: one test per scenario, 200 rows each (`pytest -m slow`).

Each test runs one scenario of `ops/faults/scenarios.py` on a stack of its own module (embedded Postgres, Temporal
dev server, emulator subprocess) with real worker subprocesses, and asserts the suite's targets: no row lost, no
duplicate delivery, no row stuck.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
N = 200

pytestmark = pytest.mark.slow


def load_scenarios() -> ModuleType:
    name = "xnovu_faults_scenarios"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / "ops" / "faults" / "scenarios.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


sc = load_scenarios()


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
