"""Checks a reading against physics and the site's previous reading: what the schema cannot see."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from hybridpool_shared.messages import TelemetryReported
from services.telemetry.domain.state import Last

METER_TOLERANCE_KWH = 1e-6
COP_CHECK_MIN_KW = 0.5
COP_CEILING = 12.0


class Order(StrEnum):
    """Where a valid reading stands relative to the site's latest one."""

    NEWER = "newer"
    OLDER = "older"
    DUPLICATE = "duplicate"


@dataclass(frozen=True)
class Limits:
    """How far readings may stray before they are refused."""

    max_future_s: float = 30.0
    max_age_h: float = 48.0
    max_implied_kw: float = 1000.0


class InvalidReading(Exception):  # noqa: N818 - a verdict, raised to the handler that dead-letters it
    """A reading that is wrong for good: kind and reason go to the dead-letter record."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind
        self.reason = reason


def check_reading(
    r: TelemetryReported,
    last: Last | None,
    now: datetime | float,
    limits: Limits = Limits(),
    t: float | None = None,
) -> Order:
    """Return the reading's order relative to the last one, or raise InvalidReading.

    now may be epoch seconds and t the reading's epoch seconds: a batch computes them once.
    """
    now_s = now.timestamp() if isinstance(now, datetime) else now
    t_s = r.measured_at.timestamp() if t is None else t
    if t_s > now_s + limits.max_future_s:
        raise InvalidReading("future_timestamp", f"measured_at {r.measured_at.isoformat()} is in the future")
    if t_s < now_s - limits.max_age_h * 3600.0:
        raise InvalidReading(
            "too_old", f"measured_at {r.measured_at.isoformat()} is older than {limits.max_age_h:g} h"
        )
    _check_physics(r)
    if last is None:
        return Order.NEWER
    return _check_against(r, t_s, last, limits)


def _check_physics(r: TelemetryReported) -> None:
    if not r.boiler_running and r.electric_power_kw >= COP_CHECK_MIN_KW:
        cop = r.heat_power_kw / r.electric_power_kw
        if cop > COP_CEILING:
            raise InvalidReading("implausible_cop", f"heat/electric = {cop:.1f} without the boiler (units?)")
    if r.electric_power_kw < 0 and r.hp_running:
        raise InvalidReading("negative_power", "a running heat pump cannot feed power back")


def _check_against(r: TelemetryReported, t_s: float, last: Last, limits: Limits) -> Order:
    dt_h = (t_s - last.measured_s) / 3600.0
    delta = r.meter_reading_kwh - last.meter_kwh
    if dt_h == 0:
        if abs(delta) > METER_TOLERANCE_KWH:
            raise InvalidReading(
                "conflicting_duplicate", "same timestamp as the last reading, other meter value"
            )
        return Order.DUPLICATE
    if dt_h > 0 and delta < -METER_TOLERANCE_KWH:
        raise InvalidReading(
            "meter_decreased",
            f"meter {r.meter_reading_kwh} kWh below the earlier {last.meter_kwh} kWh",
        )
    if dt_h < 0 and delta > METER_TOLERANCE_KWH:
        raise InvalidReading(
            "meter_not_monotone", f"older reading's meter {r.meter_reading_kwh} kWh above the later one's"
        )
    if dt_h > 0 and delta / dt_h > limits.max_implied_kw:
        raise InvalidReading("meter_jump", f"meter rose {delta:.1f} kWh in {dt_h * 3600:.0f} s")
    return Order.NEWER if dt_h > 0 else Order.OLDER
