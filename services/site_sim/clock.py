"""The simulated clock: starts at a chosen instant and runs `speedup` times faster than real time."""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class SimClock:
    """Simulated UTC epoch seconds derived from the monotonic clock."""

    start_s: float
    speedup: float = 1.0
    _mono0: float = field(default_factory=time.monotonic)

    def now_s(self) -> float:
        """Return the simulated time now, in UTC epoch seconds."""
        return self.start_s + (time.monotonic() - self._mono0) * self.speedup

    def real_seconds_until(self, sim_s: float) -> float:
        """Return how many real seconds remain until the simulated clock reaches sim_s."""
        return (sim_s - self.now_s()) / self.speedup
