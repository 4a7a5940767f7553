"""HTTP read side for the ops room: the latest curves from Redis."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import FastAPI, HTTPException, Query

from hybridpool_shared.timeutil import require_utc
from services.price_ingest.adapters.store import PriceStore
from services.price_ingest.domain.datasets import TopicKind

DEFAULT_PRODUCT = {TopicKind.DAY_AHEAD: "spot", TopicKind.IMBALANCE: "imbalance"}


def _aware(value: datetime | None, name: str) -> datetime | None:
    if value is None:
        return None
    try:
        return require_utc(value)
    except ValueError as exc:
        raise HTTPException(422, f"{name} must carry a timezone, e.g. 2025-10-01T00:00Z") from exc


def add_routes(api: FastAPI, store: PriceStore) -> None:
    """Add GET /prices (list of curves) and GET /prices/{kind} (one area/product, a time range)."""

    @api.get("/prices", tags=["prices"])
    async def list_curves() -> dict[str, list[str]]:
        return {"curves": await store.curves()}

    @api.get("/prices/{kind}", tags=["prices"])
    async def read_curve(
        kind: TopicKind,
        area: Annotated[str, Query(pattern=r"^[A-Z0-9]{2,4}$")],
        product: str | None = None,
        direction: str | None = None,
        start: Annotated[datetime | None, Query(alias="from")] = None,
        end: Annotated[datetime | None, Query(alias="to")] = None,
    ) -> dict[str, Any]:
        product = product or DEFAULT_PRODUCT.get(kind)
        if product is None:
            raise HTTPException(422, "product is required for reserve prices (e.g. fcr_n, mfrr_capacity)")
        prefix = f"{kind.value}:{area}:{product}:"
        ids = [c for c in await store.curves() if c.startswith(prefix)]
        if direction:
            ids = [c for c in ids if c == prefix + direction]
        lo, hi = _aware(start, "from"), _aware(end, "to")
        curves = {cid: await store.read(cid, lo, hi) for cid in ids}
        return {"kind": kind.value, "area": area, "product": product, "curves": curves}
