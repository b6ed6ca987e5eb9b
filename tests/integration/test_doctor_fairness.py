"""`xnovu doctor` says whether the Temporal server dispatches by fairness key (docs/priority.md "Temporal priority
and fairness keys"): measured on the dev server started without and with `matching.enableFairness=true`, since no
API reports it.

Run: pytest tests/integration/test_doctor_fairness.py --basetemp=/tmp/pt-prioops
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from temporalio.client import Client

from tests.support import Env
from xnovu.devtools.stack import TemporalDevServer, free_port
from xnovu.temporal.fairness import probe_fairness
from xnovu.worker.doctor import run_checks


@pytest.fixture(scope="module")
def fair_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TemporalDevServer]:
    base: Path = tmp_path_factory.mktemp("fair-temporal")
    server = TemporalDevServer(
        base / "temporal.db",
        port=free_port(),
        ui_port=None,
        namespace="xnovu",
        log_file=base / "temporal.log",
        dynamic_config=("matching.enableFairness=true",),
    ).start()
    try:
        yield server
    finally:
        server.stop()


async def test_the_probe_tells_a_server_with_fairness_from_one_without(
    env: Env, fair_server: TemporalDevServer
) -> None:
    plain = await probe_fairness(await Client.connect(env.stack.temporal.address, namespace="default"))
    fair = await probe_fairness(await Client.connect(fair_server.address, namespace="xnovu"))
    print(f"\nfairness probe: plain server {plain}, server with matching.enableFairness {fair}")
    assert (plain.state, fair.state) == ("off", "on")


async def test_doctor_reports_fairness_in_one_line(env: Env, fair_server: TemporalDevServer) -> None:
    default = env.settings.model_copy(update={"temporal_namespace": "default"})
    plain = {c.name: c for c in await run_checks(default, fairness_probe=True)}
    fair = {
        c.name: c
        for c in await run_checks(
            env.settings.model_copy(update={"temporal_address": fair_server.address, "temporal_namespace": "xnovu"}),
            fairness_probe=True,
        )
    }
    for checks in (plain, fair):
        assert checks["temporal-fairness"].ok and "\n" not in checks["temporal-fairness"].detail
    assert plain["temporal-fairness"].detail.startswith("off: ")
    assert "matching.enableFairness=true" in plain["temporal-fairness"].detail
    assert fair["temporal-fairness"].detail.startswith("on: ")
    # Opt-in: a plain doctor run starts no probe workflow (Temporal Cloud bills them) and says how to run it.
    client = await Client.connect(env.stack.temporal.address, namespace="default")
    probes = "WorkflowType = 'XnovuFairnessProbe'"
    before = (await client.count_workflows(probes)).count
    skipped = {c.name: c for c in await run_checks(default)}
    assert skipped["temporal-fairness"].ok and skipped["temporal-fairness"].detail.startswith("not probed")
    assert "xnovu doctor --fairness-probe" in skipped["temporal-fairness"].detail
    assert (await client.count_workflows(probes)).count == before
