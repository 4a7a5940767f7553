"""Redis state of the market simulator: results (idempotency), accepted energy bids, settlement."""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import datetime
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from hybridpool_shared.messages import BidCleared, BidSubmitted, PoolActivated, ReservePriceIngested
from hybridpool_shared.messages.base import utc_key
from hybridpool_shared.timeutil import require_utc
from services.market_sim.domain import MfrrQuarter, replayed_mfrr

CLEARED_KEY = "market_sim:cleared"
SETTLEMENT_KEY = "market_sim:settlement"
SCENARIO_KEY = "market_sim:scenario"
ENERGY_PREFIX = "market_sim:energy:"
ACTIVATED_KEY = "market_sim:activated_bids"


def _product(raw: str) -> str:
    name = raw.strip().lower().replace("-", "_").replace(" ", "_")
    return {"fcr": "fcr_dk1"}.get(name, name)


class ReservePrices:
    """Replayed capacity prices from prices.reserve (per area, product and quarter start)."""

    def __init__(self) -> None:
        self.prices: dict[tuple[str, str], dict[int, float]] = defaultdict(dict)

    def add(self, price: ReservePriceIngested) -> None:
        """Store a price on every quarter of its interval (upsert)."""
        if price.price_eur_per_mw_per_h is None:
            return
        start = int(price.interval_start.timestamp())
        for q in range(price.interval_minutes // 15):
            self.prices[(price.area, _product(price.product))][start + q * 900] = price.price_eur_per_mw_per_h

    def mean(self, area: str, product: str, start: datetime, minutes: int) -> float | None:
        """Return the mean price over a bid's interval if every quarter is known."""
        known = self.prices.get((area, product), {})
        first = int(require_utc(start).timestamp())
        values = [known.get(first + q * 900) for q in range(minutes // 15)]
        if not values or any(v is None for v in values):
            return None
        return sum(v for v in values if v is not None) / len(values)


def load_frequency(path: Path | None) -> list[float]:
    """Read a 1-s frequency trace (Hz per line; blank lines and # comments ignored)."""
    if path is None:
        return []
    values = []
    for line in path.read_text().splitlines():
        text = line.split("#", 1)[0].strip()
        if text:
            value = float(text)
            if not 45.0 <= value <= 55.0:
                raise ValueError(f"{path}: {value} Hz is not a grid frequency")
            values.append(value)
    return values


def load_replay(path: Path | None) -> dict[tuple[str, str], MfrrQuarter]:
    """Read MfrrEnergyActivationMarket records (a JSON list) keyed by (area, 'YYYY-MM-DDTHH:MMZ')."""
    if path is None:
        return {}
    records: list[dict[str, Any]] = json.loads(path.read_text())
    return {(str(r["PriceArea"]), str(r["TimeUTC"])[:16] + "Z"): replayed_mfrr(r) for r in records}


class Ledger:
    """What the simulator decided and paid, in Redis."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis

    async def result_for(self, bid_id: str) -> BidCleared | None:
        """Return the earlier result of a bid (a redelivered bid gets the same answer)."""
        raw = await self.redis.hget(CLEARED_KEY, bid_id)
        return BidCleared.from_json_bytes(raw) if raw else None

    async def record(self, bid: BidSubmitted, result: BidCleared, revenue_eur: float, capacity: bool) -> None:
        """Store a result, its settlement line and an accepted energy bid under its quarter, atomically."""
        entry = {
            "kind": "capacity" if capacity else "energy_bid",
            "bid_id": bid.bid_id,
            "revenue_eur": revenue_eur,
        }
        entry |= {"product": bid.product.value, "area": bid.area, "mw": result.accepted_mw}
        entry |= {"accepted": result.accepted, "start": bid.interval_start.isoformat()}
        # One transaction: a redelivered bid skips this once its result exists, so the rest must exist too.
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(CLEARED_KEY, bid.bid_id, result.to_json_bytes())
            pipe.hset(SETTLEMENT_KEY, f"bid:{bid.bid_id}", json.dumps(entry))
            if result.accepted and bid.price_eur_per_mwh is not None:
                pipe.hset(ENERGY_PREFIX + utc_key(bid.interval_start), bid.bid_id, bid.to_json_bytes())
            await pipe.execute()

    async def energy_bids(self, quarter: datetime) -> list[BidSubmitted]:
        """Return the accepted energy bids of a quarter."""
        raw = await self.redis.hvals(ENERGY_PREFIX + utc_key(quarter))
        return [BidSubmitted.from_json_bytes(v) for v in raw]

    async def is_drawn(self, bid_id: str) -> bool:
        """True once a bid's activation was drawn and, if it had one, published and settled."""
        return bool(await self.redis.hexists(ACTIVATED_KEY, bid_id))

    async def mark_drawn(self, bid_id: str) -> None:
        """Remember that a bid was drawn without an activation."""
        await self.redis.hset(ACTIVATED_KEY, bid_id, "1")

    async def record_activation(self, activation: PoolActivated, revenue_eur: float) -> None:
        """Store an activation's settlement and mark its bid drawn, atomically."""
        entry = {"kind": "activation", "bid_id": activation.bid_id, "revenue_eur": revenue_eur}
        entry |= {"direction": activation.direction.value, "mw": activation.power_mw}
        entry |= {"start": activation.start.isoformat()}
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(SETTLEMENT_KEY, activation.activation_id, json.dumps(entry))
            pipe.hset(ACTIVATED_KEY, activation.bid_id, "1")
            await pipe.execute()

    async def settlement(self) -> dict[str, Any]:
        """Return every settled line and the totals."""
        lines = [json.loads(v) for v in (await self.redis.hvals(SETTLEMENT_KEY))]
        capacity = sum(line["revenue_eur"] for line in lines if line["kind"] == "capacity")
        energy = sum(line["revenue_eur"] for line in lines if line["kind"] == "activation")
        return {
            "capacity_revenue_eur": round(capacity, 2),
            "activation_revenue_eur": round(energy, 2),
            "total_eur": round(capacity + energy, 2),
            "lines": sorted(lines, key=lambda line: (line["start"], line["bid_id"])),
        }

    async def scenario(self, default: str) -> str:
        """Return the scenario chosen at run time (CLI), else the configured one."""
        raw = await self.redis.get(SCENARIO_KEY)
        return raw.decode() if isinstance(raw, bytes) else (raw or default)

    async def set_scenario(self, name: str) -> None:
        """Choose the scenario at run time."""
        await self.redis.set(SCENARIO_KEY, name)
