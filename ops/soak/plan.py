"""The soak's plan: everything a run does, derived only from (seed, minutes) through `random.Random(seed)`.

Two runs with the same seed and minutes insert the same rows (recipient counts, schedules, drafts) at the same
offsets and inject the same faults at the same offsets, with the same knobs (token budget, lease, idempotency, number
of workers). What the machine does in between (timing, CPU contention) is not reproducible, so a seed reproduces a
failure as well as a fault schedule can: run it again with the printed command.

Knobs (ops/soak/README.md "What it mixes"): workers 2..3, NOVU_RATE_LIMIT_RPS 10..600 (log-uniform),
PROCESSING_LEASE_MS 5..15 s, Novu idempotency on/off, rows of 1..5 000 recipients within the run's token budget,
scheduled rows, draft rows published later, held/unpublished/republished/deleted workflows, retracts, bulk edits,
5xx/timeouts/429 windows, worker SIGKILL/SIGSTOP/restart, a Postgres restart, a migration during load, the
transaction pooler.
"""

from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass, field
from typing import Any

#: Fault kinds, in the order of the README's table.
FAULT_KINDS = (
    "kill",  # SIGKILL a worker, start a replacement after `down_s`
    "kill_all",  # SIGKILL every worker at once (a lost node), start them all again after `down_s`
    "stall",  # SIGSTOP a worker for `down_s` (a stalled worker: its lease runs out), then SIGCONT
    "restart",  # SIGTERM a worker (graceful), start a replacement at once
    "novu_5xx",  # emulator answers `rate` of requests 500 for `down_s`
    "novu_timeouts",  # emulator processes `rate` of requests but answers after the client's timeout, for `down_s`
    "novu_429",  # emulator's own token bucket at `rps` (below the worker budget): a 429 storm for `down_s`
    "pg_restart",  # Postgres stopped for `down_s`, then started
    "migrate",  # `xnovu db migrate` re-applies the claim-index and wake-up migrations while rows flow
    "wf_hold",  # a workflow deactivated for `down_s` (rows held), then reactivated
    "wf_unpublish",  # a workflow set to DRAFT for `down_s` (rows held), then PUBLISH again
    "wf_delete",  # a workflow set to DELETED (its unsent rows dead-letter); new rows go to the other workflows
    "retract",  # `count` random unfinished rows retracted
    "bulk_edit",  # one UPDATE over `count` unfinished rows: payload rewrite, or unpublish then republish after down_s
)

WORKFLOWS = ("soak-alpha", "soak-beta", "soak-gamma", "soak-delta")


@dataclass(frozen=True)
class Fault:
    at_s: float
    kind: str
    worker: int = 0
    down_s: float = 0.0
    rate: float = 0.0
    rps: float = 0.0
    count: int = 0
    workflow: int = 0
    variant: str = ""

    def describe(self) -> str:
        detail = {
            "kill": f"worker-{self.worker}, replaced after {self.down_s:.0f} s",
            "kill_all": f"every worker, replaced after {self.down_s:.0f} s",
            "stall": f"worker-{self.worker} SIGSTOP for {self.down_s:.0f} s",
            "restart": f"worker-{self.worker} SIGTERM + new worker",
            "novu_5xx": f"{self.rate:.0%} 500s for {self.down_s:.0f} s",
            "novu_timeouts": f"{self.rate:.0%} timeouts for {self.down_s:.0f} s",
            "novu_429": f"emulator bucket {self.rps:.0f}/s for {self.down_s:.0f} s",
            "pg_restart": f"down {self.down_s:.0f} s",
            "migrate": "re-apply 0004+0005 under load",
            "wf_hold": f"{WORKFLOWS[self.workflow]} deactivated {self.down_s:.0f} s",
            "wf_unpublish": f"{WORKFLOWS[self.workflow]} DRAFT {self.down_s:.0f} s",
            "wf_delete": f"{WORKFLOWS[self.workflow]} DELETED",
            "retract": f"{self.count} rows",
            "bulk_edit": f"{self.count} rows, {self.variant}" + (f" {self.down_s:.0f} s" if self.down_s else ""),
        }[self.kind]
        return f"t+{self.at_s:.0f}s {self.kind} ({detail})"


@dataclass(frozen=True)
class Insert:
    at_s: float
    workflow: int
    recipients: tuple[int, ...]
    """Recipient count of each row of this insert (one transaction)."""
    scheduled_in_s: tuple[float | None, ...]
    """Per row: send time as an offset from the insert (None: due now)."""
    draft: tuple[bool, ...]
    """Per row: inserted with publish_status DRAFT; `publish_at_s` publishes it (None: stays a draft)."""
    publish_at_s: float | None = None


@dataclass
class Plan:
    seed: int
    minutes: float
    workers: int
    rps: int
    lease_ms: int
    idempotency: bool
    max_attempts: int
    novu_timeout_ms: int
    latency_ms: int
    pooler: bool
    load_s: float
    history: int = 0
    """SENT rows in the table before the run (a migration or a claim on a real table is not on an empty one)."""
    inserts: list[Insert] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return sum(len(i.recipients) for i in self.inserts)

    @property
    def recipients(self) -> int:
        return sum(sum(i.recipients) for i in self.inserts)

    @property
    def biggest_row(self) -> int:
        return max((max(i.recipients) for i in self.inserts), default=0)

    def summary(self) -> str:
        kinds: dict[str, int] = {}
        for f in self.faults:
            kinds[f.kind] = kinds.get(f.kind, 0) + 1
        faults = ", ".join(f"{k}x{n}" for k, n in sorted(kinds.items())) or "none"
        return (
            f"seed {self.seed}: {self.workers} workers, budget {self.rps}/s, lease {self.lease_ms / 1000:g} s, "
            f"idempotency {'on' if self.idempotency else 'off'}, max_attempts {self.max_attempts}, "
            f"pooler {'on' if self.pooler else 'off'}, {self.history} SENT rows before; "
            f"{self.rows} rows / {self.recipients} recipients "
            f"(biggest {self.biggest_row}) over {self.load_s:.0f} s; faults: {faults}"
        )

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["inserts"] = len(self.inserts)
        out["rows"] = self.rows
        out["recipients_total"] = self.recipients
        out["faults"] = [f.describe() for f in self.faults]
        return out


def _log_uniform(rng: random.Random, low: float, high: float) -> float:
    return math.exp(rng.uniform(math.log(low), math.log(high)))


def _row_size(rng: random.Random, room: int) -> int:
    """Recipients of one row: mostly small, sometimes a hundred or more, rarely thousands (within `room`)."""
    r = rng.random()
    if r < 0.85:
        n = rng.randint(1, 5)
    elif r < 0.97:
        n = rng.randint(6, 120)
    elif r < 0.995:
        n = rng.randint(121, 1000)
    else:
        n = rng.randint(1001, 5000)
    return max(1, min(n, room))


def _fault(rng: random.Random, kind: str, at: float, worker: int, wf: int, lease_s: float, rps: int) -> Fault:
    """The knobs of one fault, drawn from `rng` (always in the same order, so the plan is a function of the seed)."""
    if kind == "kill":
        return Fault(at, kind, worker=worker, down_s=round(rng.uniform(0, 10), 1))
    if kind == "stall":
        return Fault(at, kind, worker=worker, down_s=round(rng.uniform(0.5, 2.5) * lease_s, 1))
    if kind == "restart":
        return Fault(at, kind, worker=worker)
    if kind == "novu_5xx":
        return Fault(at, kind, rate=rng.choice((0.1, 0.3, 0.6)), down_s=round(rng.uniform(5, 20), 1))
    if kind == "novu_timeouts":
        return Fault(at, kind, rate=rng.choice((0.05, 0.15, 0.3)), down_s=round(rng.uniform(5, 20), 1))
    if kind == "novu_429":
        return Fault(at, kind, rps=max(2.0, round(rps * rng.uniform(0.2, 0.6))), down_s=round(rng.uniform(5, 15), 1))
    if kind == "pg_restart":
        return Fault(at, kind, down_s=round(rng.uniform(1, 5), 1))
    if kind in ("wf_hold", "wf_unpublish"):
        return Fault(at, kind, workflow=wf, down_s=round(rng.uniform(3, 20), 1))
    if kind == "wf_delete":
        return Fault(at, kind, workflow=wf)
    if kind == "retract":
        return Fault(at, kind, count=rng.randint(1, 10))
    if kind == "bulk_edit":
        variant = rng.choice(("payload", "unpublish"))
        down = round(rng.uniform(2, 10), 1) if variant == "unpublish" else 0.0
        return Fault(at, kind, count=rng.randint(5, 200), variant=variant, down_s=down)
    return Fault(at, kind)  # migrate


def make_plan(seed: int, minutes: float) -> Plan:
    """The whole run of `seed` over `minutes` of load; nothing but (seed, minutes) goes in."""
    rng = random.Random(seed)
    load_s = max(20.0, minutes * 60.0)
    plan = Plan(
        seed=seed,
        minutes=minutes,
        workers=rng.choice((2, 2, 3)),
        rps=round(_log_uniform(rng, 10, 600)),
        lease_ms=rng.choice((5000, 8000, 10000, 15000)),
        idempotency=rng.random() < 0.6,
        max_attempts=rng.choice((3, 5, 50)),
        novu_timeout_ms=2000,
        latency_ms=rng.choice((0, 5, 20, 50)),
        pooler=rng.random() < 0.25,
        load_s=load_s,
    )
    # Recipients the budget can send in about half the load time (the rest is headroom for faults and retries);
    # capped so a short run stays short on a small machine.
    budget = int(min(plan.rps * load_s * 0.5, 2500 * max(1.0, minutes) + 2500))
    budget = max(budget, 40)
    # Rows first (sizes until the budget is spent), then their insert times spread over the load.
    spent = 0
    big_row = rng.random() < 0.5
    batches: list[list[int]] = []
    while spent < budget and len(batches) < load_s * 4:
        batch = rng.choice((1, 1, 1, 2, 3, 5, 10, 20))
        sizes: list[int] = []
        for _ in range(batch):
            room = budget - spent
            if room <= 0:
                break
            if big_row and len(batches) == 3:
                # One big row per run: 1 000..5 000 recipients, within 40% of the run's token budget but at least
                # 15 s of it, so it can exceed what a poll claims at once (docs/design.md "Back-pressure": 10 s).
                n, big_row = max(1, min(rng.randint(1000, 5000), max(budget * 2 // 5, 15 * plan.rps))), False
            else:
                n = _row_size(rng, min(room, budget * 2 // 5))
            sizes.append(n)
            spent += n
        batches.append(sizes)
    times = sorted(round(rng.uniform(0.5, load_s * 0.85), 2) for _ in batches)
    for t, sizes in zip(times, batches, strict=True):
        scheduled = tuple(rng.uniform(2, 20) if rng.random() < 0.15 else None for _ in sizes)
        draft = tuple(rng.random() < 0.08 for _ in sizes)
        publish_at = round(t + rng.uniform(3, 20), 2) if any(draft) and rng.random() < 0.7 else None
        plan.inserts.append(Insert(t, rng.randrange(len(WORKFLOWS)), tuple(sizes), scheduled, draft, publish_at))

    lease_s = plan.lease_ms / 1000
    # About one fault every 8 s of load, at least one worker fault, one Novu fault and one edit per run.
    n_faults = max(4, int(load_s / 8))
    must = ["kill", rng.choice(("novu_5xx", "novu_timeouts", "novu_429")), rng.choice(("retract", "bulk_edit"))]
    weights = {
        "kill": 3,
        "stall": 3,
        "restart": 1,
        "novu_5xx": 3,
        "novu_timeouts": 3,
        "novu_429": 2,
        "pg_restart": 1,
        "migrate": 1,
        "wf_hold": 2,
        "wf_unpublish": 2,
        "wf_delete": 1,
        "retract": 3,
        "bulk_edit": 3,
    }
    kinds = must + rng.choices(list(weights), weights=list(weights.values()), k=n_faults - len(must))
    deleted: set[int] = set()
    pg_restarts = 0
    for kind in kinds:
        at = round(rng.uniform(3, load_s * 0.9), 1)
        worker = rng.randrange(plan.workers)
        wf = rng.randrange(len(WORKFLOWS))
        if kind == "wf_delete":
            # Keep at least two workflows alive, so most rows are still sent.
            if len(deleted) >= len(WORKFLOWS) - 2 or wf in deleted:
                kind = "retract"
            else:
                deleted.add(wf)
        if kind == "pg_restart":
            pg_restarts += 1
            if pg_restarts > max(1, int(load_s / 120)):
                kind = "kill"
        plan.faults.append(_fault(rng, kind, at, worker, wf, lease_s, plan.rps))
    plan.faults.sort(key=lambda f: f.at_s)
    # Drawn last, so adding them changed no earlier seed's plan.
    plan.history = rng.choice((0, 0, 10_000, 50_000))
    if rng.random() < 0.4:
        # Every worker SIGKILLed at once (a node lost): whatever was PROCESSING, the biggest row included, is dead.
        big = [i.at_s for i in plan.inserts if max(i.recipients) == plan.biggest_row]
        at = round(min(load_s * 0.9, big[0] + rng.uniform(1, 8)) if big else rng.uniform(3, load_s * 0.9), 1)
        plan.faults.append(Fault(at, "kill_all", down_s=round(rng.uniform(0, 5), 1)))
        plan.faults.sort(key=lambda f: f.at_s)
    return plan
