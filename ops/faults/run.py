"""xnovu fault suite: one command, a fresh embedded stack, five faults, and the delivery invariants after each.

    .venv/bin/python ops/faults/run.py [--n 1000] [--json] [--only a,c] [--timeout 180] [--keep]

Exit 0 when every scenario ends with 0 lost, 0 duplicates and 0 stuck rows; 1 otherwise. See ops/faults/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import logging
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType, ModuleType
from typing import Any

from rich.console import Console
from rich.table import Table

HERE = Path(__file__).resolve().parent


def load_scenarios() -> ModuleType:
    """ops/faults/scenarios.py by path (ops/ is tooling, not a package)."""
    name = "xnovu_faults_scenarios"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, HERE / "scenarios.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the file executes
    spec.loader.exec_module(module)
    return module


def results_table(results: list[Any]) -> Table:
    table = Table(title="xnovu fault suite (targets: 0 lost, 0 duplicates, 0 stuck)")
    for col, justify in (
        ("scenario", "left"),
        ("rows", "right"),
        ("sent", "right"),
        ("failed", "right"),
        ("lost", "right"),
        ("dup (stats)", "right"),
        ("dup (events)", "right"),
        ("stuck", "right"),
        ("retried", "right"),
        ("duration", "right"),
        ("result", "left"),
    ):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for r in results:
        verdict = "[green]PASS[/green]" if r.ok else f"[red]FAIL[/red] {'; '.join(r.misses())}"
        table.add_row(
            r.name,
            str(r.n),
            str(r.sent),
            str(r.failed),
            str(r.lost),
            str(r.duplicates),
            str(r.duplicate_events),
            str(r.stuck),
            str(r.notes.get("rows_retried", "")),
            f"{r.duration_s:.1f} s",
            verdict,
        )
    return table


async def run_suite(
    n: int, keys: list[str], timeout_s: float, base: Path, console: Console, results: list[Any] | None = None
) -> list[Any]:
    """Every scenario in `keys` on one fresh stack; results are appended to `results` as they come (so an
    interrupted run still reports the scenarios it finished)."""
    sc = load_scenarios()
    stack = sc.FaultStack(base)
    results = [] if results is None else results

    def say(msg: str) -> None:
        console.log(msg, markup=False)

    try:
        say(f"starting the stack in {base}")
        await asyncio.to_thread(stack.start)
        say(f"Postgres {stack.postgres.data_dir}, Temporal {stack.temporal.address}, emulator {stack.emulator_url}")
        for key in keys:
            scenario = sc.SCENARIOS[key]
            say(f"[{key}] {scenario.name}: {scenario.description}")
            result = await sc.run_scenario(stack, scenario, n, timeout_s=timeout_s, say=say)
            results.append(result)
            say(f"[{key}] {'PASS' if result.ok else 'FAIL: ' + '; '.join(result.misses())}")
    finally:
        say("stopping the stack")
        await asyncio.to_thread(stack.stop)
    return results


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run the xnovu fault scenarios on a fresh embedded stack.")
    parser.add_argument("--n", type=int, default=1000, help="rows per scenario (default 1000)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON on stdout")
    parser.add_argument("--only", default=None, help="comma-separated scenario keys (default: every scenario)")
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds per scenario (default 180)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (logs, databases)")
    args = parser.parse_args(argv)

    sc = load_scenarios()
    keys = [k.strip() for k in (args.only or ",".join(sc.SCENARIOS)).split(",") if k.strip()]
    unknown = [k for k in keys if k not in sc.SCENARIOS]
    if unknown or args.n < 1:
        parser.error(f"unknown scenario(s) {unknown}; known: {', '.join(sc.SCENARIOS)}" if unknown else "--n >= 1")

    # Progress goes to stderr, so --json output on stdout stays parseable.
    console = Console(stderr=True)
    logging.basicConfig(level=logging.WARNING)
    # Ctrl-C and SIGTERM both unwind through the `finally` blocks that stop workers and the stack (SIGINT is set
    # explicitly because a shell starting us in the background would have it ignored).
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    base = Path(tempfile.mkdtemp(prefix="xnovu-faults-"))
    started = time.monotonic()
    results: list[Any] = []
    interrupted = False
    try:
        asyncio.run(run_suite(args.n, keys, args.timeout, base, console, results))
    except KeyboardInterrupt:
        interrupted = True
        console.print("[red]interrupted: the stack was stopped[/red]")
    finally:
        if args.keep or interrupted or not all(r.ok for r in results):
            console.print(f"logs and data kept in {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)

    ok = bool(results) and not interrupted and len(results) == len(keys) and all(r.ok for r in results)
    if args.json:
        payload = {
            "n": args.n,
            "ok": ok,
            "duration_s": round(time.monotonic() - started, 1),
            "scenarios": [r.as_dict() for r in results],
        }
        sys.stdout.write(json.dumps(payload, indent=2, default=str) + "\n")
    else:
        Console(width=max(150, Console().width)).print(results_table(results))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
