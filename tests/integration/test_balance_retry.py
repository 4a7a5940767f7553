"""The balance engine on a real Redis: a site change whose republish failed is republished on redelivery."""

from __future__ import annotations

from datetime import timedelta

import pytest
import redis.asyncio as aioredis

from hybridpool_shared.messages import (
    BalancePriceComputed,
    ControlOption,
    SiteLocation,
    SiteMasterDataChanged,
)
from hybridpool_shared.timeutil import QUARTER, floor_quarter, utc_now
from services.balance.engine import BalanceEngine
from services.balance.settings import BalanceSettings
from tests.infra import unique

pytestmark = pytest.mark.integration
AREA = "NO2"  # an area no other test prices


class FlakyPublish:
    """Collects published balance prices; the first call fails when armed."""

    def __init__(self) -> None:
        self.sent: list[BalancePriceComputed] = []
        self.armed = False

    async def __call__(self, message: BalancePriceComputed) -> None:
        if self.armed:
            self.armed = False
            raise RuntimeError("broker unavailable")
        self.sent.append(message)


def _site(site_id: str, efficiency: float) -> SiteMasterDataChanged:
    return SiteMasterDataChanged(
        site_id=site_id,
        changed_at=utc_now(),
        location=SiteLocation(latitude_deg=59.0, longitude_deg=6.0, price_area=AREA),
        hp_heat_power_kw=5.0,
        hp_electric_power_kw=1.6,
        boiler_efficiency=efficiency,
        control_options=(ControlOption.SG_READY,),
    )


async def test_site_change_is_republished_when_the_first_republish_failed(redis: aioredis.Redis) -> None:
    publish = FlakyPublish()
    engine = BalanceEngine(redis, BalanceSettings(), publish)
    site_id = unique("bal-retry")
    starts = [floor_quarter(utc_now()) + timedelta(days=1) + i * QUARTER for i in range(4)]
    await engine.prices.put(AREA, dict.fromkeys(starts, 50.0))
    assert await engine.on_site(_site(site_id, 0.9)) == 0  # a new site: nothing to republish yet

    changed = _site(site_id, 0.7)
    publish.armed = True
    with pytest.raises(RuntimeError):
        await engine.on_site(changed)
    publish.sent.clear()

    await engine.on_site(changed)  # the redelivery

    expected = (await engine.compute([changed], starts, AREA)).balance_eur_per_mwh[0].round(4).tolist()
    stale = (await engine.compute([_site(site_id, 0.9)], starts, AREA)).balance_eur_per_mwh[0]
    mine = sorted((m for m in publish.sent if m.site_id == site_id), key=lambda m: m.interval_start)
    assert [m.interval_start for m in mine] == starts, "the redelivered change was not republished"
    assert [m.balance_price_eur_per_mwh for m in mine] == expected
    assert expected != stale.round(4).tolist()

    publish.sent.clear()
    assert await engine.on_site(changed) == 0  # republished once: a further redelivery sends nothing
