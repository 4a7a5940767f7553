"""Site telemetry (HP-Hub 401–418) and its 15-minute aggregates."""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field

from hybridpool_shared.messages.base import IntervalMessage, Message, SiteId, UtcDatetime


class TelemetryReported(Message):
    """A site gateway reported one reading."""

    site_id: SiteId
    measured_at: UtcDatetime
    electric_power_kw: float = Field(ge=-1, le=1000, description="HP-Hub 411.")
    meter_reading_kwh: float = Field(ge=0, description="HP-Hub 401: cumulative, monotone.")
    heat_power_kw: float = Field(ge=0, le=5000)
    supply_temp_c: float = Field(ge=-30, le=100, description="HP-Hub 408.")
    return_temp_c: float = Field(ge=-30, le=100, description="HP-Hub 409.")
    indoor_temp_c: float = Field(ge=-20, le=50, description="HP-Hub 417.")
    outdoor_temp_c: float = Field(ge=-50, le=50, description="HP-Hub 418.")
    hp_running: bool
    boiler_running: bool
    sg_ready_state: int = Field(ge=1, le=4, description="HP-Hub 305.")

    def kafka_key(self) -> bytes:
        """Key by site: per-site order."""
        return self.site_id.encode()


class AggregateQuality(StrEnum):
    """How much of a quarter's data was measured."""

    MEASURED = "measured"
    ESTIMATED = "estimated"
    MISSING = "missing"


class QuarterAggregated(IntervalMessage):
    """A site's 15-minute aggregate was computed from its readings (upsert by site and interval_start).

    Energy is the meter's delta; a delta between two readings that spans a quarter boundary is split
    between the quarters by time, so the quarters of a site add up to its meter's delta exactly.
    """

    site_id: SiteId
    quality: AggregateQuality
    readings: int = Field(ge=0)
    energy_kwh: float | None = Field(default=None, description="Meter delta in the quarter.")
    mean_power_kw: float | None = None
    heat_energy_kwh: float | None = None
    cop_measured: float | None = Field(default=None, ge=0)
    indoor_temp_min_c: float | None = None
    indoor_temp_max_c: float | None = None
    outdoor_temp_mean_c: float | None = None
    hp_running_share: float | None = Field(default=None, ge=0, le=1)
    coverage_share: float | None = Field(
        default=None, ge=0, le=1, description="Share of the quarter between readings (1: fully covered)."
    )
    energy_apportioned_kwh: float | None = Field(
        default=None,
        description="Part of energy_kwh from meter deltas spanning a quarter boundary, split by time.",
    )
    revised: bool = Field(default=False, description="Replaces an earlier aggregate of the same quarter.")

    def kafka_key(self) -> bytes:
        """Key by site."""
        return self.site_id.encode()
