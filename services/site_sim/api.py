"""HTTP read side of the simulator: fleet master data, one site's state, ground truth, clock."""

from __future__ import annotations

import math
from typing import Any

from fastapi import FastAPI, HTTPException, Query

from services.site_sim.clock import SimClock
from services.site_sim.domain.sim import FleetSim, to_dt


def add_routes(api: FastAPI, sim: FleetSim, clock: SimClock) -> None:
    """Register the simulator's routes on the service's HTTP app."""

    @api.get("/fleet", tags=["simulator"])
    async def fleet(offset: int = Query(0, ge=0), limit: int = Query(500, ge=1, le=5000)) -> dict[str, Any]:
        items = sim.p.master[offset : offset + limit]
        return {
            "total": sim.p.n,
            "offset": offset,
            "limit": limit,
            "items": [m.model_dump(mode="json") for m in items],
        }

    @api.get("/fleet/{site_id}", tags=["simulator"])
    async def site(site_id: str) -> dict[str, Any]:
        i = sim.index.get(site_id)
        if i is None:
            raise HTTPException(404, f"no simulated site {site_id}")
        return {
            "master": sim.p.master[i].model_dump(mode="json"),
            "sim_time": to_dt(sim.t).isoformat(),
            "indoor_c": float(sim.indoor_c[i]),
            "outdoor_c": float(sim.outdoor_c[i]),
            "hp_on": bool(sim.hp_on[i]),
            "electric_power_kw": float(sim.power_kw()[i]),
            "meter_kwh": float(sim.meter_kwh[i]),
            "sg_ready_state": int(sim.sg[i]),
            "lease_until": None
            if math.isnan(sim.lease_until[i])
            else to_dt(float(sim.lease_until[i])).isoformat(),
            "unresponsive": bool(sim.p.unresponsive[i]),
            "offline": bool(sim.p.offline[i]),
        }

    @api.get("/ground-truth", tags=["simulator"])
    async def ground_truth(site_id: str | None = None, command_id: str | None = None) -> list[dict[str, Any]]:
        return [r.model_dump(mode="json") for r in sim.ground_truth(site_id, command_id)]

    @api.get("/clock", tags=["simulator"])
    async def sim_clock() -> dict[str, Any]:
        return {
            "now": to_dt(clock.now_s()).isoformat(),
            "model_at": to_dt(sim.t).isoformat(),
            "speedup": clock.speedup,
        }
