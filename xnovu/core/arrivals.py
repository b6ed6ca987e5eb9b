"""When this worker last heard commits that made new rows due: whether they come as a trickle.

The wake-up listener (xnovu/worker/wakeup.py) notes each 'new' notification; the claim activity
(xnovu/temporal/activities.py) asks whether another commit is likely within WAKEUP_LINGER_MS, and only then tells the
poll run to stay open for wake signals (docs/performance.md "Cost at any arrival rate"). Every worker listens, so
every worker hears every commit and any of them may run the claim. A worker whose wake-ups are off hears nothing and
never lingers: nobody would signal its run.
"""

from __future__ import annotations

import os
import time
import uuid
from collections import deque
from collections.abc import Callable

#: A signal folded by WAKEUP_DEBOUNCE_MS reaches the lingering run this much after the window's end at most (the
#: describes and the signal): a window shorter than the fold plus this would close before the signal arrives.
SIGNAL_MARGIN_MS = 250


def linger_window_s(linger_ms: int, debounce_ms: int, poll_interval_ms: int) -> float:
    """How long a drained new-rows run stays open for wake signals, from the settings; 0: it never lingers.

    At least the fold plus SIGNAL_MARGIN_MS (a longer WAKEUP_DEBOUNCE_MS than WAKEUP_LINGER_MS would otherwise make
    every window close before the folded commit's signal, paying a timer for nothing), and at most the poll interval
    (a lingering run holds the schedule's ticks back, the safety net of a lost wake-up). When the fold does not fit
    in the interval the run does not linger: no signal would reach it in time."""
    if linger_ms <= 0:
        return 0.0
    needed = debounce_ms + SIGNAL_MARGIN_MS
    window = min(max(linger_ms, needed), poll_interval_ms)
    return window / 1000 if window >= needed else 0.0


class Arrivals:
    """The times of the last two commits heard (monotonic clock of this process), and this process's identity: the
    memo of a run that lingers names the worker whose claim decided it, and only that worker's listener signals it
    (every worker hears every commit; one signal per fold is enough, each further one a claim for nothing)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._heard: deque[float] = deque(maxlen=2)
        self.identity = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"

    def heard(self) -> None:
        """A commit made new rows due."""
        self._heard.append(self._clock())

    def trickling(self, window_s: float) -> bool:
        """Two commits heard within the last `window_s`: they come often enough that a run kept open that long is
        likely to take the next one (a commit a minute is not: its run closes at once, as without linger)."""
        return len(self._heard) == 2 and self._clock() - self._heard[0] <= window_s
