"""The next live state of a site from its previous state and a newer reading."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from hybridpool_shared.messages import TelemetryReported
from hybridpool_shared.sitestate import GatewayStatus, SiteLiveState


@dataclass(frozen=True)
class Timing:
    """A site's protection times (HP-Hub 105)."""

    min_run: timedelta = timedelta(minutes=15)
    lockout: timedelta = timedelta(minutes=15)


def next_state(
    prev: SiteLiveState | None, r: TelemetryReported, received_at: datetime, timing: Timing = Timing()
) -> SiteLiveState:
    """Return the state after a reading newer than prev.

    A switch happened somewhere between the two readings; taking the later reading's time as the
    switch time makes lock-out and minimum run end late rather than early: the safe side.
    """
    running_since = stopped_since = None
    if r.hp_running:
        kept = prev is not None and prev.hp_running and prev.running_since is not None
        running_since = prev.running_since if kept and prev else r.measured_at
        stopped_since = prev.stopped_since if prev else None
    else:
        kept = prev is not None and not prev.hp_running and prev.stopped_since is not None
        stopped_since = prev.stopped_since if kept and prev else r.measured_at
        running_since = prev.running_since if prev else None
    return SiteLiveState(
        site_id=r.site_id,
        measured_at=r.measured_at,
        electric_power_kw=r.electric_power_kw,
        meter_reading_kwh=r.meter_reading_kwh,
        hp_running=r.hp_running,
        boiler_running=r.boiler_running,
        sg_ready_state=r.sg_ready_state,
        indoor_temp_c=r.indoor_temp_c,
        outdoor_temp_c=r.outdoor_temp_c,
        running_since=running_since,
        stopped_since=stopped_since,
        lockout_ends_at=stopped_since + timing.lockout if stopped_since and not r.hp_running else None,
        min_run_ends_at=running_since + timing.min_run if running_since and r.hp_running else None,
        gateway_status=GatewayStatus.OK,
        updated_at=received_at,
        received_at=received_at,
        heat_power_kw=r.heat_power_kw,
        supply_temp_c=r.supply_temp_c,
        return_temp_c=r.return_temp_c,
    )


def gateway_status(age_s: float, stale_after_s: float, offline_after_s: float) -> GatewayStatus:
    """Return the gateway status implied by the age of the latest reading's arrival."""
    if age_s >= offline_after_s:
        return GatewayStatus.OFFLINE
    if age_s >= stale_after_s:
        return GatewayStatus.STALE
    return GatewayStatus.OK
