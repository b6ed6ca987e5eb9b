"""xnovu randomized soak: seeded plans of mixed load and faults on a fresh local stack, checked while they run.

    .venv/bin/python ops/soak/run.py --seed 7 [--seed 8] [--seeds 1,2,3] [--minutes 1] [--json] [--keep]

Exit 0 when every seed passes every check; 1 otherwise, after one `reproduce: ...` line per failing seed.
See ops/soak/README.md.
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

HERE = Path(__file__).resolve().parent
#: The default seeds (tests/soak/test_soak.py runs 17 in CI, all three with `-m soak`): between them the pooler, a
#: stalled worker, every worker killed at once, a migration under load, a Postgres restart, idempotency off with
#: timeouts and 429s.
DEFAULT_SEEDS = (8, 17, 46)
DEFAULT_MINUTES = 0.75


def load_soak() -> ModuleType:
    """ops/soak/soak.py by path (ops/ is tooling, not a package)."""
    name = "xnovu_soak"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, HERE / "soak.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


async def run_seeds(seeds: list[int], minutes: float, base: Path, console: Console, results: list[Any]) -> None:
    """Every seed, one after another, on one fresh stack (a fresh database and namespace each)."""
    soak = load_soak()
    stack = soak.sc.FaultStack(base)

    def say(msg: str) -> None:
        console.log(msg, markup=False)

    bouncer = None
    try:
        say(f"starting the stack in {base}")
        await asyncio.to_thread(stack.start)
        bouncer = await asyncio.to_thread(soak.start_pooler, stack, seeds, minutes, say)
        for seed in seeds:
            result = await soak.run_seed(stack, seed, minutes, say=say, pgbouncer=bouncer)
            results.append(result)
            say(f"seed {seed}: {'PASS' if result.ok else 'FAIL: ' + result.headline()} ({result.duration_s:.0f} s)")
    finally:
        say("stopping the stack")
        if bouncer is not None:
            bouncer.stop()
        await asyncio.to_thread(stack.stop)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run the xnovu randomized soak on a fresh local stack.")
    parser.add_argument("--seed", type=int, action="append", default=[], help="a seed (repeatable)")
    parser.add_argument("--seeds", default="", help="comma-separated seeds")
    parser.add_argument("--minutes", type=float, default=DEFAULT_MINUTES, help="minutes of load per seed")
    parser.add_argument("--json", action="store_true", help="print the results as JSON on stdout")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (logs, databases)")
    args = parser.parse_args(argv)
    seeds = list(args.seed) + [int(s) for s in args.seeds.split(",") if s.strip()]
    seeds = seeds or list(DEFAULT_SEEDS)
    if args.minutes <= 0:
        parser.error("--minutes must be > 0")

    console = Console(stderr=True, width=160)
    logging.basicConfig(level=logging.WARNING)
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    base = Path(tempfile.mkdtemp(prefix="xnovu-soak-"))
    started = time.monotonic()
    results: list[Any] = []
    interrupted = False
    try:
        asyncio.run(run_seeds(seeds, args.minutes, base, console, results))
    except KeyboardInterrupt:
        interrupted = True
        console.print("[red]interrupted: the stack was stopped[/red]")
    ok = bool(results) and not interrupted and len(results) == len(seeds) and all(r.ok for r in results)
    if args.keep or not ok:
        console.print(f"logs and data kept in {base}")
    else:
        shutil.rmtree(base, ignore_errors=True)

    soak = load_soak()
    if args.json:
        payload = {
            "ok": ok,
            "minutes": args.minutes,
            "duration_s": round(time.monotonic() - started, 1),
            "seeds": [r.as_dict() for r in results],
        }
        sys.stdout.write(json.dumps(payload, indent=2, default=str) + "\n")
    for r in results:
        console.print(r.plan, markup=False, highlight=False)
        console.print(
            f"  {'PASS' if r.ok else 'FAIL'}: {r.rows} rows, {r.recipients} recipients, {r.deliveries} deliveries, "
            f"{r.statuses}, held {r.held}, allowed duplicates {r.duplicates_allowed}, max insert "
            f"{r.max_insert_s:.2f} s, longest quiet {r.longest_quiet_s:.0f} s, {r.duration_s:.0f} s",
            markup=False,
            highlight=False,
        )
        for f in r.findings:
            at = f" at t+{f.at_s:.0f}s" if f.at_s is not None else ""
            console.print(f"  {f.kind}{at}: {f.detail}", markup=False, highlight=False)
    for r in results:
        if not r.ok:
            # One line per failing seed, on stdout unless --json took it.
            line = f"{soak.reproduce_command(r.seed, r.minutes)}  # {r.headline()}"
            (console.print(line, markup=False, highlight=False) if args.json else print(line))  # noqa: T201
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
