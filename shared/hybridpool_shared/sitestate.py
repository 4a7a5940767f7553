"""A site's live state in Redis: written by the telemetry service, read by bidding, dispatch, ops room.

`site:state:<site_id>` is a hash with one field `json` (a SiteLiveState). The telemetry service writes it
for every newer reading; running_since/stopped_since are the first reading that showed the switch (so
lock-out and minimum run end late rather than early); gateway_status turns stale/offline when no reading
has arrived for a while (the `site:state:last_seen` sorted set holds each site's last arrival).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict

from hybridpool_shared.messages.base import SiteId, UtcDatetime

STATE_KEY_PREFIX = "site:state:"
STATE_INDEX_KEY = "site:state:index"  # a set of every site_id with a state
LAST_SEEN_KEY = "site:state:last_seen"  # a sorted set: site_id scored by its last reading's arrival (epoch s)


class GatewayStatus(StrEnum):
    """HP-Hub 301 as seen from data freshness."""

    OK = "ok"
    STALE = "stale"
    OFFLINE = "offline"


class SiteLiveState(BaseModel):
    """What is known about a site right now (from its latest readings)."""

    model_config = ConfigDict(extra="forbid")

    site_id: SiteId
    measured_at: UtcDatetime
    electric_power_kw: float
    meter_reading_kwh: float
    hp_running: bool
    boiler_running: bool
    sg_ready_state: int
    indoor_temp_c: float
    outdoor_temp_c: float
    running_since: UtcDatetime | None = None
    stopped_since: UtcDatetime | None = None
    lockout_ends_at: UtcDatetime | None = None
    min_run_ends_at: UtcDatetime | None = None
    gateway_status: GatewayStatus = GatewayStatus.OK
    updated_at: UtcDatetime
    received_at: UtcDatetime | None = None
    heat_power_kw: float | None = None
    supply_temp_c: float | None = None
    return_temp_c: float | None = None

    def to_redis(self) -> dict[str, str]:
        """Return the hash fields to store (JSON-encoded values)."""
        return {"json": self.model_dump_json()}

    @classmethod
    def from_redis(cls, fields: dict[bytes, bytes]) -> SiteLiveState:
        """Parse a hash read from Redis."""
        return cls.model_validate_json(fields[b"json"])

    def data_age_s(self, now: datetime) -> float:
        """Return how many seconds old the latest reading is (by its measurement time)."""
        return (now - self.measured_at).total_seconds()

    def can_start(self, now: datetime) -> bool:
        """Return True if the HP is idle and past its lock-out."""
        return not self.hp_running and (self.lockout_ends_at is None or now >= self.lockout_ends_at)

    def can_stop(self, now: datetime) -> bool:
        """Return True if the HP runs and is past its minimum run time."""
        return self.hp_running and (self.min_run_ends_at is None or now >= self.min_run_ends_at)


def state_key(site_id: str) -> str:
    """Return the Redis key of a site's live state."""
    return STATE_KEY_PREFIX + site_id
