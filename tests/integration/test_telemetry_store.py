"""The telemetry service's Redis reads and writes on a real server: what one batch writes, a restart loads."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
import redis.asyncio as aioredis

from hybridpool_shared.messages import TelemetryReported
from hybridpool_shared.timeutil import utc_now
from services.telemetry import adapters
from services.telemetry.adapters import LiveStateStore
from services.telemetry.domain.quarters import QuarterAggregator, sample_of
from services.telemetry.domain.state import Timing, advance, state_json
from tests.infra import unique

pytestmark = pytest.mark.integration


def _reading(site_id: str, meter_kwh: float) -> TelemetryReported:
    return TelemetryReported(
        site_id=site_id,
        measured_at=utc_now() - timedelta(seconds=30),
        electric_power_kw=2.0,
        meter_reading_kwh=meter_kwh,
        heat_power_kw=6.0,
        supply_temp_c=40.0,
        return_temp_c=35.0,
        indoor_temp_c=21.0,
        outdoor_temp_c=2.0,
        hp_running=True,
        boiler_running=False,
        sg_ready_state=2,
    )


async def test_load_sites_returns_what_a_batch_wrote_site_by_site(
    redis: aioredis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(adapters, "READ_CHUNK", 2)  # several read calls, each one's triples kept in line
    store = LiveStateStore(redis)
    sites = [unique("stored-villa") for _ in range(5)]
    written = sites[:4]  # the fifth never reported
    agg = QuarterAggregator()
    docs: dict[str, bytes] = {}
    for i, site_id in enumerate(written):
        reading = _reading(site_id, 100.0 + i)
        agg.add(site_id, sample_of(reading))
        docs[site_id] = state_json(reading, advance(None, reading), utc_now(), Timing())
    quarters = {site_id: b"S" + agg.snapshot(site_id) for site_id in written[:3]}
    await store.save_json(docs, time.time(), quarters)
    await store.set_timing(written[1], (20, 25))

    loaded = await store.load_sites(sites)

    assert loaded.site_ids == set(sites)
    assert sorted(loaded.states) == sorted(written)
    assert [loaded.states[s].meter_reading_kwh for s in written] == [100.0, 101.0, 102.0, 103.0]
    assert loaded.quarters == {s: q[1:] for s, q in quarters.items()}  # the silent site has none
    assert loaded.timings == {written[1]: (20, 25)}
