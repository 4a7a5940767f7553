"""Site master data (HP-Hub signals 101–109, 201–204) and the audit trail."""

from __future__ import annotations

from enum import StrEnum
from typing import Self

from pydantic import Field, model_validator

from hybridpool_shared.messages.base import Message, PriceArea, SiteId, UtcDatetime


class ControlOption(StrEnum):
    """How a site's heat pump can be controlled (HP-Hub 107)."""

    SG_READY = "sg_ready"
    EVU = "evu"
    ON_OFF_RELAY = "on_off_relay"
    FREQUENCY_CONTROLLED = "frequency_controlled"


class SiteLocation(Message):
    """Where a site is (HP-Hub 103)."""

    address: str = Field(default="", max_length=200)
    latitude_deg: float = Field(ge=-90, le=90)
    longitude_deg: float = Field(ge=-180, le=180)
    price_area: PriceArea


class SiteMasterData(Message):
    """A site's master data as an installer enters it (HP-Hub 101–109)."""

    site_id: SiteId = Field(description="HP-Hub 101: unique heat pump id.")
    make_model: str = Field(default="", max_length=120, description="HP-Hub 102.")
    location: SiteLocation
    hp_heat_power_kw: float = Field(gt=0, le=2000, description="HP-Hub 104: max heat output.")
    hp_electric_power_kw: float = Field(gt=0, le=1000, description="HP-Hub 104: compressor.")
    immersion_heater_kw: float = Field(default=0.0, ge=0, le=100, description="HP-Hub 104.")
    boiler_power_kw: float = Field(default=0.0, ge=0, le=5000, description="Gas boiler output.")
    boiler_efficiency: float = Field(default=0.95, gt=0, le=1.1, description="On gross CV.")
    min_run_minutes: int = Field(default=15, ge=0, le=240, description="HP-Hub 105.")
    lockout_minutes: int = Field(default=15, ge=0, le=240, description="HP-Hub 105: rest.")
    max_starts_per_hour: int = Field(default=3, ge=1, le=12)
    dhw_tank_l: float = Field(default=0.0, ge=0, le=10000, description="HP-Hub 106.")
    buffer_tank_l: float = Field(default=0.0, ge=0, le=100000, description="HP-Hub 106.")
    control_options: tuple[ControlOption, ...] = Field(min_length=1, description="HP-Hub 107.")
    meter_number: str = Field(default="", max_length=40, description="HP-Hub 108.")
    immersion_heater_placement: str = Field(default="", max_length=80, description="HP-Hub 109.")
    heated_area_m2: float = Field(default=150.0, gt=0, le=100000)
    owner_id: str = Field(default="", max_length=64, description="The end user who owns the data.")

    @model_validator(mode="after")
    def _cop_plausible(self) -> Self:
        if self.hp_heat_power_kw < self.hp_electric_power_kw:
            raise ValueError("hp_heat_power_kw below hp_electric_power_kw implies COP < 1")
        return self


class SiteMasterDataChanged(SiteMasterData):
    """A site's master data was created, changed or removed (compacted topic, keyed by site)."""

    changed_at: UtcDatetime
    deleted: bool = Field(default=False, description="True: the site left the registry.")
    installer_id: str = Field(default="", max_length=64, description="Who installed and edits it.")

    def kafka_key(self) -> bytes:
        """Key by site: the compacted topic keeps the last state of each site."""
        return self.site_id.encode()


class AuditRecorded(Message):
    """An access or change was recorded in the hash-chained audit log."""

    seq: int = Field(ge=0)
    recorded_at: UtcDatetime
    actor_id: str = Field(min_length=1, max_length=64)
    role: str = Field(min_length=1, max_length=32)
    action: str = Field(min_length=1, max_length=64)
    site_id: SiteId | None = None
    purpose: str = Field(default="", max_length=120)
    outcome: str = Field(min_length=1, max_length=32, description="allowed / denied / error")
    detail: str = Field(default="", max_length=2000)
    prev_hash: str = Field(pattern=r"^[0-9a-f]{64}$")
    hash: str = Field(pattern=r"^[0-9a-f]{64}$")

    def kafka_key(self) -> bytes:
        """One key: the audit chain is totally ordered on one partition."""
        return b"audit"
