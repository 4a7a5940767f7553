"""A documented synthetic outdoor temperature for Denmark in the heating season, deterministic per seed.

Daily mean from a seasonal cosine fitted to Danish monthly normals (January ≈ 0.5 °C, July ≈ 17 °C),
a daily swing of ±3 K (coldest 05:00, warmest 15:00 UTC+1), and weather fronts as a sum of three slow
sines (periods 3.1, 5.3 and 9.7 days, ±4 K together) whose phases come from the seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np

YEAR_S = 365.25 * 86400.0
DAY_S = 86400.0
FRONT_PERIODS_D = (3.1, 5.3, 9.7)
FRONT_AMPLITUDES_K = (1.8, 1.4, 1.2)


@dataclass(frozen=True)
class WeatherTrace:
    """Outdoor temperature as a function of time, one trace for the whole fleet."""

    seed: int = 7
    annual_mean_c: float = 8.7
    annual_amplitude_k: float = 8.3
    daily_amplitude_k: float = 3.0
    offset_k: float = 0.0

    def outdoor_c(self, epoch_s: float) -> float:
        """Return the outdoor temperature in °C at a UTC epoch second."""
        seasonal = self.annual_mean_c - self.annual_amplitude_k * math.cos(
            2 * math.pi * (epoch_s % YEAR_S - 20 * DAY_S) / YEAR_S
        )
        hour = (epoch_s / 3600.0 + 1.0) % 24.0
        daily = self.daily_amplitude_k * math.cos(2 * math.pi * (hour - 15.0) / 24.0)
        fronts = sum(
            a * math.sin(2 * math.pi * epoch_s / (p * DAY_S) + ph)
            for a, p, ph in zip(FRONT_AMPLITUDES_K, FRONT_PERIODS_D, self._phases, strict=True)
        )
        return seasonal + daily + fronts + self.offset_k

    @cached_property
    def _phases(self) -> list[float]:
        rng = np.random.default_rng(self.seed)
        return [float(x) for x in rng.uniform(0, 2 * math.pi, len(FRONT_PERIODS_D))]
