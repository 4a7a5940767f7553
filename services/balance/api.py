"""HTTP reads of the balance service: one site over a range, the portfolio summary, COP model, tariffs."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, HTTPException, Query
from pydantic import AwareDatetime, BaseModel

from hybridpool_shared.messages import BalancePriceComputed
from hybridpool_shared.messages.base import PriceArea, SiteId
from hybridpool_shared.timeutil import floor_quarter, utc_now
from services.balance.domain import TariffVersion, active_sites, quarters, summary, to_messages
from services.balance.engine import BalanceEngine
from services.balance.settings import BalanceSettings

Start = Annotated[AwareDatetime | None, Query(description="Range start (ISO 8601 with offset); default now.")]
End = Annotated[AwareDatetime | None, Query(description="Range end, exclusive; default start + 1 day.")]


class SiteBalance(BaseModel):
    """A site's balance prices per quarter-hour and the COP model behind them."""

    site_id: str
    cop_model: dict[str, Any]
    intervals: list[BalancePriceComputed]


def _range(start: datetime | None, end: datetime | None, max_days: int) -> list[datetime]:
    first = floor_quarter(start or utc_now())
    last = end or first + timedelta(days=1)
    if last <= first:
        raise HTTPException(422, "end must be after start")
    if last - first > timedelta(days=max_days):
        raise HTTPException(422, f"range longer than {max_days} days")
    return quarters(first, last)


def mount(api: FastAPI, engine: BalanceEngine, settings: BalanceSettings) -> None:
    """Add the balance routes to the service's FastAPI app."""
    router = APIRouter(tags=["balance"])

    @router.get("/sites/{site_id}/balance-prices", response_model=SiteBalance)
    async def site_balance(site_id: SiteId, start: Start = None, end: End = None) -> SiteBalance:
        """Balance price, COP, spot and HP-or-gas decision of one site per quarter-hour in a range."""
        site = await engine.sites.get(site_id)
        if site is None:
            raise HTTPException(404, f"no site {site_id} in the balance service's view of sites.registry")
        starts = _range(start, end, settings.max_range_days)
        area = site.location.price_area
        matrix = await engine.compute([site], starts, area)
        model = (await engine.cop.models([site_id]))[0]
        return SiteBalance(
            site_id=site_id,
            cop_model=asdict(model) if model else {"fitted": False, **asdict(engine.policy.type_model)},
            intervals=to_messages(matrix, [site_id], [area], starts),
        )

    @router.get("/portfolio/summary")
    async def portfolio(area: PriceArea = "DK1", start: Start = None, end: End = None) -> dict[str, object]:
        """How many sites prefer gas in each quarter, and the fleet's balance-price distribution."""
        starts = _range(start, end, settings.max_range_days)
        sites = active_sites(await engine.sites.all(), area)
        matrix = await engine.compute_fleet(sites, starts, area)
        return {"area": area, **summary(matrix, starts)}

    @router.get("/sites/{site_id}/cop-model")
    async def cop_model(site_id: SiteId) -> dict[str, Any]:
        """A site's fitted COP model with its fit quality (samples, R², RMSE), or the type default."""
        model = (await engine.cop.models([site_id]))[0]
        outdoor = (await engine.cop.outdoor([site_id]))[0]
        return {
            "site_id": site_id,
            "model": asdict(model or engine.policy.type_model),
            "latest_outdoor": asdict(outdoor) if outdoor else None,
        }

    @router.get("/tariffs", response_model=list[TariffVersion])
    async def read_tariffs() -> list[TariffVersion]:
        """The tariff versions in force (portfolio and per site, with effective dates)."""
        return await engine.tariffs.all()

    @router.put("/tariffs", response_model=list[TariffVersion])
    async def replace_tariffs(versions: list[TariffVersion]) -> list[TariffVersion]:
        """Replace the tariff versions and republish every site's upcoming balance prices."""
        await engine.tariffs.replace(versions)
        await engine.republish(await engine.sites.all())
        return versions

    api.include_router(router)
