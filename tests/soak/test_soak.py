"""The randomized soak (ops/soak/) under pytest: a short fixed set of seeds on one local stack, about 2.5 minutes,
in CI with the rest of the suite (`.venv/bin/pytest tests/soak -q` alone). Seeds 17 and 46 found the duplicates
with Novu's idempotency off and the stall of issue 16 on the code before its fixes; they are the seeds CI runs (the
third default seed, 8, runs with `ops/soak/run.py`), to keep the suite within its time budget. A failing seed's
message starts with the one-line command that reproduces it
(`reproduce: .venv/bin/python ops/soak/run.py --seed N --minutes M`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.ops_modules import load_ops_module

pytestmark = pytest.mark.soak


runner = load_ops_module("xnovu_soak_run", "ops/soak/run.py")
soak = runner.load_soak()
#: The seeds that found issue 16's duplicates and stall.
CI_SEEDS = (17, 46)


@pytest.fixture(scope="module")
def soak_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    stack = soak.sc.FaultStack(tmp_path_factory.mktemp("soak"))
    bouncer = None
    try:
        stack.start()
        bouncer = soak.start_pooler(stack, list(CI_SEEDS), runner.DEFAULT_MINUTES, lambda _: None)
        stack.soak_pgbouncer = bouncer
        yield stack
    finally:
        if bouncer is not None:
            bouncer.stop()
        stack.stop()


@pytest.mark.parametrize("seed", CI_SEEDS)
@pytest.mark.timeout(240)
async def test_soak_seed(soak_stack: Any, seed: int) -> None:
    lines: list[str] = []
    result = await soak.run_seed(
        soak_stack, seed, runner.DEFAULT_MINUTES, say=lines.append, pgbouncer=soak_stack.soak_pgbouncer
    )
    findings = "\n".join(f"{f.kind}: {f.detail}" for f in result.findings)
    assert result.ok, (
        f"{soak.reproduce_command(seed, runner.DEFAULT_MINUTES)}\n{result.plan}\n{findings}\n" + "\n".join(lines[-40:])
    )
