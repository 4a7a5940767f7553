"""Dispatch time: the wall clock, or the telemetry's event time when the sites run on a simulated clock."""

from __future__ import annotations

import time
from collections.abc import Callable


class EventClock:
    """Time carried forward from the newest telemetry timestamp at `speedup` times real time."""

    def __init__(
        self,
        speedup: float = 1.0,
        monotonic: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.speedup = speedup
        self.monotonic = monotonic
        self.wall = wall
        self.anchor_s: float | None = None
        self.anchor_mono = 0.0

    def observe(self, event_s: float) -> None:
        """Move the clock forward to an event's time if it is ahead (never backwards)."""
        if self.anchor_s is None or event_s > self.now():
            self.anchor_s, self.anchor_mono = event_s, self.monotonic()

    def now(self) -> float:
        """Return the current time in epoch seconds (wall time until the first event)."""
        if self.anchor_s is None:
            return self.wall()
        return self.anchor_s + (self.monotonic() - self.anchor_mono) * self.speedup
