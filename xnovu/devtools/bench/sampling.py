"""What the bench samples from the operating system while it runs: the worker's memory and the machine's load."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import psutil

from xnovu.devtools.bench.plan import RSS_SAMPLE_S


def process_tree(pid: int) -> list[psutil.Process]:
    """A process and all its descendants; empty when it is gone."""
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


@dataclass
class RssSampler:
    """Peak resident memory of a process and its children, sampled in the background."""

    pid: int
    peak_bytes: int = 0

    def sample(self) -> None:
        procs = process_tree(self.pid)
        if not procs:
            return
        total = 0
        for proc in procs:
            with contextlib.suppress(psutil.Error):
                total += proc.memory_info().rss
        self.peak_bytes = max(self.peak_bytes, total)

    async def run(self, interval_s: float = RSS_SAMPLE_S) -> None:
        while True:
            self.sample()
            await asyncio.sleep(interval_s)

    @property
    def peak_mb(self) -> float:
        return self.peak_bytes / 2**20


class HostLoad:
    """CPU used on this machine by processes that are not part of the bench while it runs.

    Every figure here is relative to the same run's ceiling, which absorbs a steady background load, but a load
    that comes and goes (another test suite on a 2-core box) moves the figures by tens of percent between runs;
    the table says how busy the machine was so that a reader can tell noise from a regression.
    """

    def __init__(self, roots: Sequence[int]) -> None:
        self.roots = list(roots)
        self._baseline: dict[int, float] = {}
        self._latest: dict[int, float] = {}
        self._started = time.monotonic()
        self._busy0 = self._busy()
        self.sample(initial=True)

    @staticmethod
    def _busy() -> float:
        t = psutil.cpu_times()
        return float(sum(t) - t.idle - getattr(t, "iowait", 0.0))

    def sample(self, *, initial: bool = False) -> None:
        """CPU seconds of every process of our trees; a process first seen later started during the run."""
        for root in self.roots:
            for proc in process_tree(root):
                with contextlib.suppress(psutil.Error):
                    times = proc.cpu_times()
                    used = times.user + times.system
                    self._baseline.setdefault(proc.pid, used if initial else 0.0)
                    self._latest[proc.pid] = used

    async def run(self, interval_s: float = 1.0) -> None:
        while True:
            await asyncio.sleep(interval_s)
            self.sample()

    def foreign_percent(self) -> float:
        """Share of the machine's CPU capacity (all cores) used by others since the start, in percent."""
        self.sample()
        ours = sum(self._latest[pid] - self._baseline.get(pid, 0.0) for pid in self._latest)
        wall = max(1e-3, time.monotonic() - self._started)
        foreign = max(0.0, self._busy() - self._busy0 - ours)
        return 100.0 * foreign / (wall * (psutil.cpu_count() or 1))


def cpu_seconds(pid: int | None) -> float:
    """CPU time (user + system) a process and all its descendants have used so far, reaped children included.

    Each process's own time plus its waited-for children's (`children_user`/`children_system`): a Postgres backend
    that exited during the phase is in the postmaster's children times, a live one in its own. 0 for no process (a
    part of the stack the bench did not start) or one that is gone.
    """
    if pid is None:
        return 0.0
    total = 0.0
    for proc in process_tree(pid):
        with contextlib.suppress(psutil.Error):
            t = proc.cpu_times()
            total += t.user + t.system + t.children_user + t.children_system
    return total


@dataclass
class CpuMeter:
    """CPU used by a few named processes (the worker, the Temporal server, Postgres) between `start()` and `stop()`.

    Wall-clock rates move by tens of percent with the machine's load; CPU time per item is what one version costs
    against another (docs/performance.md "Reading the figures").
    """

    pids: dict[str, int | None]
    used_s: dict[str, float] = field(default_factory=dict)
    _start: dict[str, float] = field(default_factory=dict)

    def start(self) -> CpuMeter:
        self._start = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        return self

    def stop(self) -> dict[str, float]:
        """Seconds of CPU per name since `start()`; 0 for a process that is not ours to measure."""
        self.used_s = {
            name: max(0.0, cpu_seconds(pid) - self._start.get(name, 0.0)) if pid is not None else 0.0
            for name, pid in self.pids.items()
        }
        return self.used_s
