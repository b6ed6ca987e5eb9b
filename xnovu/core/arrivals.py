"""When this worker last heard commits that made new rows due: whether they come as a trickle.

The wake-up listener (xnovu/worker/wakeup.py) notes each 'new' notification; the claim activity
(xnovu/temporal/activities.py) asks whether another commit is likely within WAKEUP_LINGER_MS, and only then tells the
poll run to stay open for wake signals (docs/performance.md "Cost at any arrival rate"). Every worker listens, so
every worker hears every commit and any of them may run the claim. A worker whose wake-ups are off hears nothing and
never lingers: nobody would signal its run.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable


class Arrivals:
    """The times of the last two commits heard (monotonic clock of this process)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._heard: deque[float] = deque(maxlen=2)

    def heard(self) -> None:
        """A commit made new rows due."""
        self._heard.append(self._clock())

    def trickling(self, window_s: float) -> bool:
        """Two commits heard within the last `window_s`: they come often enough that a run kept open that long is
        likely to take the next one (a commit a minute is not: its run closes at once, as without linger)."""
        return len(self._heard) == 2 and self._clock() - self._heard[0] <= window_s
