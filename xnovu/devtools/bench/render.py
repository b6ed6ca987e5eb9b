"""How a bench run is shown: the table with every figure against its target, or the one `--json` object."""

from __future__ import annotations

import json
import os

from rich.table import Table

from xnovu.devtools.bench.plan import POLL_INTERVAL_MS, BenchPlan, BenchResult, evaluate_targets


def _figures(r: BenchResult, only: str | None) -> dict[str, float]:
    """The figures of the run: all, or those of the one phase run alone (`--only noisy`: the `noisy_` keys). The
    trickle phase runs only alone (it takes minutes at a commit a minute): a full run leaves its figures out."""
    figures = r.as_dict()
    if only is None:
        return {k: v for k, v in figures.items() if not k.startswith("trickle_") or r.trickle_idle_actions_per_day > 0}
    return {k: v for k, v in figures.items() if k.startswith(f"{only}_")}


def result_json(r: BenchResult, only: str | None = None) -> str:
    """The `--json` object (README "Performance" quotes it)."""
    return json.dumps(_figures(r, only))


def results_table(
    r: BenchResult,
    plan: BenchPlan,
    quick: bool,
    foreign_cpu_percent: float | None = None,
    only: str | None = None,
) -> Table:
    """Every figure with its target and pass/miss; the figures without a target (context) show a dash."""
    checks = {c.metric: c for c in evaluate_targets(r)}
    noisy = plan.noisy
    units = {"_per_s": "/s", "_s": " s", "_mb": " MB", "ratio": "", "_commits": ""}
    table = Table(
        "metric",
        "figure",
        "target",
        "result",
        title=f"xnovu bench ({'quick' if quick else 'full'})",
        caption=(
            (
                f"ceiling/e2e N={plan.e2e_n}, {plan.recipient_rows}x{plan.recipients_per_row} recipients, "
                f"{plan.latency_samples} latency samples, {plan.scheduled_rows} scheduled, backlog {plan.backlog_n}; "
                if only is None
                else ""
            )
            + f"noisy: A {noisy.a_rows} rows + 1 x {noisy.a_big_recipients}, B {noisy.b_urgent} urgent + "
            f"{noisy.b_normal} normal at {noisy.rps:g} tokens/s; poll {POLL_INTERVAL_MS / 1000:g} s"
            + (
                ""
                if foreign_cpu_percent is None
                else f"; {os.cpu_count()} cores, other processes used {foreign_cpu_percent:.0f} % of the CPU"
            )
        ),
    )
    for metric, value in _figures(r, only).items():
        unit = " ms" if "_ms_per_" in metric else next((u for sfx, u in units.items() if metric.endswith(sfx)), "")
        check = checks.get(metric)
        verdict = "-" if check is None else ("[green]pass[/green]" if check.passed else "[red]miss[/red]")
        table.add_row(metric, f"{value:g}{unit}", check.target if check else "-", verdict)
    return table
