"""Product rules: how an activation's target follows the frequency, and which SG Ready state serves it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from hybridpool_shared.messages import Direction, ReserveProduct, SgReadyState

NOMINAL_HZ = 50.0
FCR_BANDS_HZ: dict[ReserveProduct, float] = {
    ReserveProduct.FCR_N: 0.1,  # 49.9–50.1 Hz
    ReserveProduct.FCR_DK1: 0.2,
}
FCR_D_RANGE_HZ: dict[ReserveProduct, tuple[float, float]] = {
    ReserveProduct.FCR_D_UP: (49.9, 49.5),
    ReserveProduct.FCR_D_DOWN: (50.1, 50.5),
}
FREQUENCY_PRODUCTS = frozenset({*FCR_BANDS_HZ, *FCR_D_RANGE_HZ})
DEADLINES = {
    ReserveProduct.FCR_N: timedelta(seconds=150),
    ReserveProduct.FCR_DK1: timedelta(seconds=30),
    ReserveProduct.FCR_D_UP: timedelta(seconds=30),
    ReserveProduct.FCR_D_DOWN: timedelta(seconds=30),
    ReserveProduct.MFRR_ENERGY: timedelta(minutes=12.5),
    ReserveProduct.MFRR_CAPACITY: timedelta(minutes=12.5),
}


def sign(direction: Direction) -> float:
    """Return +1 for up-regulation (less consumption) and -1 for down."""
    return 1.0 if direction is Direction.UP else -1.0


def active_state(direction: Direction) -> SgReadyState:
    """Return the SG Ready state that delivers a direction: up blocks the HP, down forces it on."""
    return SgReadyState.BLOCK if direction is Direction.UP else SgReadyState.FORCE_ON


def frequency_share(product: ReserveProduct, direction: Direction, frequency_hz: float) -> float:
    """Return the share (0..1) of the held capacity the frequency asks for in one direction."""
    if product in FCR_BANDS_HZ:
        deviation = (NOMINAL_HZ - frequency_hz) / FCR_BANDS_HZ[product]
        wanted = deviation if direction is Direction.UP else -deviation
        return min(1.0, max(0.0, wanted))
    if product in FCR_D_RANGE_HZ:
        begin, full = FCR_D_RANGE_HZ[product]
        share = (frequency_hz - begin) / (full - begin)
        matches = (product is ReserveProduct.FCR_D_UP) == (direction is Direction.UP)
        return min(1.0, max(0.0, share)) if matches else 0.0
    return 1.0


@dataclass(frozen=True)
class ActivationSpec:
    """What the pool must deliver: a change of requested_kw in one direction over [start, end)."""

    activation_id: str
    product: ReserveProduct
    direction: Direction
    requested_kw: float
    start_s: float
    end_s: float
    follow_frequency: bool = False
    area: str | None = None  # the bidding zone that must deliver (None: any unit)

    def target_kw(self, now_s: float, frequency_hz: float | None) -> float:
        """Return the change wanted now (kW, positive in the activation's direction)."""
        if not self.start_s <= now_s < self.end_s:
            return 0.0
        if self.follow_frequency and self.product in FREQUENCY_PRODUCTS:
            if frequency_hz is None:
                return 0.0
            return self.requested_kw * frequency_share(self.product, self.direction, frequency_hz)
        return self.requested_kw
