"""Redis state of the balance service: known sites, day-ahead prices, COP samples and models, tariffs."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict
from datetime import UTC, datetime

import numpy as np
import redis.asyncio as aioredis
from pydantic import TypeAdapter

from hybridpool_shared.domain.cop import CopModel, HeatingCurve
from hybridpool_shared.messages import SiteMasterDataChanged
from services.balance.domain import OutdoorReading, TariffVersion

SITES_KEY = "balance:sites"
PENDING_KEY = "balance:sites:republish_pending"
PRICES_KEY = "balance:prices:{area}"
SAMPLES_KEY = "balance:samples:{site}"
OUTDOOR_KEY = "balance:outdoor"
MODELS_KEY = "balance:cop_models"
COP_USED_KEY = "balance:cop_used"
TARIFFS_KEY = "balance:tariffs"
TARIFF_LIST = TypeAdapter(list[TariffVersion])


class SiteView:
    """Sites known from `sites.registry`, kept in a Redis hash so restarts need no replay."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis

    async def upsert(self, site: SiteMasterDataChanged, *, changed: bool) -> bool:
        """Store or remove a site, marking it pending a republish if changed, in one transaction.

        Return whether the site is pending: changed now, or earlier with its republish not done.
        """
        async with self.redis.pipeline(transaction=True) as pipe:
            if site.deleted:
                pipe.hdel(SITES_KEY, site.site_id)
                pipe.srem(PENDING_KEY, site.site_id)
            else:
                pipe.hset(SITES_KEY, site.site_id, site.to_json_bytes())
                if changed:
                    pipe.sadd(PENDING_KEY, site.site_id)
            pipe.sismember(PENDING_KEY, site.site_id)
            *_, pending = await pipe.execute()
        return bool(pending)

    async def republished(self, site_id: str) -> None:
        """Clear a site's pending republish."""
        await self.redis.srem(PENDING_KEY, site_id)

    async def all(self) -> list[SiteMasterDataChanged]:
        """Return every known site."""
        raw = await self.redis.hvals(SITES_KEY)
        return [SiteMasterDataChanged.from_json_bytes(value) for value in raw]

    async def many(self, site_ids: Sequence[str]) -> list[SiteMasterDataChanged]:
        """Return the known sites among site_ids, in one round trip."""
        if not site_ids:
            return []
        raws = await self.redis.hmget(SITES_KEY, list(site_ids))
        return [SiteMasterDataChanged.from_json_bytes(r) for r in raws if r]

    async def get(self, site_id: str) -> SiteMasterDataChanged | None:
        """Return one site."""
        raw = await self.redis.hget(SITES_KEY, site_id)
        return SiteMasterDataChanged.from_json_bytes(raw) if raw else None


class PriceBook:
    """Day-ahead spot prices per area and quarter-hour start (EUR/MWh), trimmed to a retention window."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis

    async def put(self, area: str, prices: dict[datetime, float]) -> None:
        """Upsert prices by quarter start."""
        mapping = {str(int(start.timestamp())): repr(price) for start, price in prices.items()}
        if mapping:
            await self.redis.hset(PRICES_KEY.format(area=area), mapping=mapping)  # type: ignore[arg-type]

    async def spots(self, area: str, starts: Sequence[datetime]) -> np.ndarray:
        """Return spot prices for the starts (NaN where unknown)."""
        if not starts:
            return np.array([])
        fields = [str(int(s.timestamp())) for s in starts]
        raws = await self.redis.hmget(PRICES_KEY.format(area=area), fields)
        return np.array([float(r) if r is not None else np.nan for r in raws])

    async def starts_from(self, area: str, since: datetime) -> list[datetime]:
        """Return the stored quarter starts at or after since, in order."""
        keys = await self.redis.hkeys(PRICES_KEY.format(area=area))
        epochs = sorted(int(k) for k in keys if int(k) >= since.timestamp())
        return [datetime.fromtimestamp(e, UTC) for e in epochs]

    async def trim(self, area: str, before: datetime) -> None:
        """Forget prices of quarters before a time."""
        keys = await self.redis.hkeys(PRICES_KEY.format(area=area))
        old = [k for k in keys if int(k) < before.timestamp()]
        if old:
            await self.redis.hdel(PRICES_KEY.format(area=area), *old)


class CopStore:
    """Per-site COP samples (idempotent by quarter), fitted models, latest outdoor temperature."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis

    async def add_samples(
        self, samples: dict[str, list[tuple[datetime, float, float]]], keep_after: datetime
    ) -> None:
        """Add (quarter start, outdoor °C, COP) samples per site; drop ones older than keep_after."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for site, rows in samples.items():
                key = SAMPLES_KEY.format(site=site)
                members = {f"{int(t.timestamp())}|{out!r}|{cop!r}": t.timestamp() for t, out, cop in rows}
                pipe.zadd(key, members)
                pipe.zremrangebyscore(key, "-inf", f"({keep_after.timestamp()}")
            await pipe.execute()

    async def samples(self, site: str) -> tuple[np.ndarray, np.ndarray]:
        """Return (outdoor °C, COP) arrays of a site's samples, one per quarter."""
        members = await self.redis.zrange(SAMPLES_KEY.format(site=site), 0, -1)
        by_quarter: dict[str, tuple[float, float]] = {}
        for member in members:
            text = member.decode() if isinstance(member, bytes) else str(member)
            quarter, out, cop = text.split("|")
            by_quarter[quarter] = (float(out), float(cop))
        values = np.array(list(by_quarter.values()), dtype=np.float64).reshape(-1, 2)
        return values[:, 0], values[:, 1]

    async def set_outdoor(self, readings: dict[str, OutdoorReading]) -> None:
        """Store each site's outdoor reading if it is newer than the stored one."""
        current = await self.outdoor(list(readings))
        newer = {
            site: json.dumps({"temp_c": r.temp_c, "measured_at": r.measured_at.isoformat()})
            for (site, r), old in zip(readings.items(), current, strict=True)
            if old is None or r.measured_at >= old.measured_at
        }
        if newer:
            await self.redis.hset(OUTDOOR_KEY, mapping=newer)  # type: ignore[arg-type]

    async def outdoor(self, site_ids: Sequence[str]) -> list[OutdoorReading | None]:
        """Return each site's latest outdoor reading."""
        if not site_ids:
            return []
        raws = await self.redis.hmget(OUTDOOR_KEY, list(site_ids))
        return [_reading(r) if r else None for r in raws]

    async def put_model(self, site: str, model: CopModel) -> None:
        """Store a site's fitted COP model."""
        await self.redis.hset(MODELS_KEY, site, json.dumps(asdict(model)))

    async def models(self, site_ids: Sequence[str]) -> list[CopModel | None]:
        """Return each site's fitted model (None: not fitted yet)."""
        if not site_ids:
            return []
        raws = await self.redis.hmget(MODELS_KEY, list(site_ids))
        return [_model(r) if r else None for r in raws]

    async def cop_used(self, site_ids: Sequence[str]) -> list[float | None]:
        """Return the COP each site's last published balance prices used."""
        if not site_ids:
            return []
        raws = await self.redis.hmget(COP_USED_KEY, list(site_ids))
        return [float(r) if r else None for r in raws]

    async def set_cop_used(self, values: dict[str, float]) -> None:
        """Remember the COP the published balance prices used."""
        if values:
            await self.redis.hset(COP_USED_KEY, mapping={k: repr(v) for k, v in values.items()})


def _reading(raw: bytes | str) -> OutdoorReading:
    data = json.loads(raw)
    return OutdoorReading(float(data["temp_c"]), datetime.fromisoformat(data["measured_at"]))


def _model(raw: bytes | str) -> CopModel:
    data = json.loads(raw)
    curve = HeatingCurve(**data.pop("curve"))
    return CopModel(curve=curve, **data)


class TariffStore:
    """Tariff versions (portfolio and per site), replaced as a whole."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis

    async def all(self) -> list[TariffVersion]:
        """Return every stored tariff version."""
        raw = await self.redis.get(TARIFFS_KEY)
        return TARIFF_LIST.validate_json(raw) if raw else []

    async def replace(self, versions: list[TariffVersion]) -> None:
        """Store a new list of tariff versions."""
        await self.redis.set(TARIFFS_KEY, TARIFF_LIST.dump_json(versions))
