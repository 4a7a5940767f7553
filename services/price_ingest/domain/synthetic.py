"""A synthetic but realistic Danish price shape, written as EDS records (SAMPLE DATA, not market data).

Spot: a seasonal level, a daily profile with morning and evening peaks and a solar dip, lower
weekends, autocorrelated noise, occasional negative hours (wind/solar surplus) and spikes; DK2 follows
DK1 with a small spread. Imbalance, mFRR energy and reserve capacity prices are derived from it.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from hybridpool_shared.timeutil import COPENHAGEN
from services.price_ingest.domain.datasets import Dataset

EUR_DKK = 7.4604
_AREA_OFFSET = {"DK1": 0.0, "DK2": 6.0}


class SampleMarket:
    """Deterministic generator of sample prices; the same seed gives the same records."""

    def __init__(self, seed: int = 2025) -> None:
        self.seed = seed

    def _rand(self, *parts: object) -> float:
        """Return a deterministic pseudo-random number in [0, 1) for a tuple of parts."""
        h = zlib.crc32(repr((self.seed, *parts)).encode())
        h = (h ^ (h >> 16)) * 0x45D9F3B & 0xFFFFFFFF
        h = (h ^ (h >> 16)) * 0x45D9F3B & 0xFFFFFFFF
        return ((h ^ (h >> 16)) & 0xFFFFFF) / float(0x1000000)

    def _noise(self, *parts: object) -> float:
        u1, u2 = max(self._rand(*parts, 1), 1e-9), self._rand(*parts, 2)
        return math.sqrt(-2 * math.log(u1)) * math.cos(2 * math.pi * u2)

    def spot_eur(self, start: datetime, area: str) -> float:
        """Return the sample spot price in EUR/MWh for the interval starting at start."""
        local = start.astimezone(COPENHAGEN)
        hour = local.hour + local.minute / 60
        season = 25 * math.cos(2 * math.pi * (local.timetuple().tm_yday - 15) / 365)
        daily = 28 * math.exp(-(((hour - 8) / 1.8) ** 2)) + 40 * math.exp(-(((hour - 18.5) / 2.2) ** 2))
        solar = -30 * max(0.0, -season / 25 + 0.4) * math.exp(-(((hour - 13) / 2.5) ** 2))
        night = -18 * math.exp(-(((hour - 3) / 2.5) ** 2))
        weekend = -14 if local.weekday() >= 5 else 0
        day_key = local.date().toordinal()
        weather = 22 * self._noise("day", day_key) + 10 * self._noise("hour", day_key, local.hour)
        quarter = 4 * self._noise("q", start.timestamp(), area)
        price = 70 + season + daily + solar + night + weekend + weather + quarter + _AREA_OFFSET[area]
        shock = self._rand("shock", day_key, local.hour)
        if shock < 0.012:
            price = -abs(price) * 0.3 - 5  # surplus: negative prices are real and valid
        elif shock > 0.994:
            price = price * 3 + 200  # scarcity spike
        return round(price, 2)

    def imbalance(self, start: datetime, area: str) -> tuple[int, float, float, float]:
        """Return dominating direction, imbalance, mFRR up and mFRR down prices (EUR/MWh)."""
        spot = self.spot_eur(start, area)
        u = self._rand("imb", start.timestamp(), area)
        up = round(spot + 5 + 40 * self._rand("up", start.timestamp(), area) ** 3, 2)
        down = round(spot - 5 - 30 * self._rand("dn", start.timestamp(), area) ** 3, 2)
        if u < 0.35:
            return 1, up, up, down
        if u < 0.7:
            return -1, down, up, down
        return 0, spot, up, down

    def capacity_eur(self, start: datetime, product: str, direction: str) -> float:
        """Return a sample reserve capacity price in EUR per MW per hour."""
        local = start.astimezone(COPENHAGEN)
        base = {"fcr_n": 22, "fcr_d": 6, "fcr_dk1": 14, "mfrr": 6, "afrr": 9}[product]
        factor = 0.3 if direction == "down" else 1.0
        block = local.hour // 4 if product == "fcr_dk1" else local.hour
        wiggle = 0.6 + 0.8 * self._rand("cap", product, direction, local.date().toordinal(), block)
        return round(base * factor * wiggle, 2)


def _fmt(instant: datetime) -> str:
    return instant.strftime("%Y-%m-%dT%H:%M:%S")


def _times(dataset: Dataset, instant: datetime) -> dict[str, str]:
    return {
        dataset.time_column: _fmt(instant.astimezone(UTC)),
        dataset.local_column: _fmt(instant.astimezone(COPENHAGEN)),
    }


def _dkk(eur: float) -> float:
    return round(eur * EUR_DKK, 6)


def _day_ahead(m: SampleMarket, d: Dataset, t: datetime, area: str) -> list[dict[str, Any]]:
    eur = m.spot_eur(t, area)
    if d.name == "Elspotprices":
        return [{**_times(d, t), "PriceArea": area, "SpotPriceDKK": _dkk(eur), "SpotPriceEUR": eur}]
    return [{**_times(d, t), "PriceArea": area, "DayAheadPriceEUR": eur, "DayAheadPriceDKK": _dkk(eur)}]


def _imbalance(m: SampleMarket, d: Dataset, t: datetime, area: str) -> list[dict[str, Any]]:
    direction, imb, up, down = m.imbalance(t, area)
    spot = m.spot_eur(t, area)
    return [
        {
            **_times(d, t),
            "PriceArea": area,
            "SatisfiedDemand": float(direction * 40),
            "ImbalancePriceEUR": imb,
            "ImbalancePriceDKK": _dkk(imb),
            "SpotPriceEUR": spot,
            "DominatingDirection": direction,
            "mFRRMarginalPriceUpEUR": up,
            "mFRRMarginalPriceUpDKK": _dkk(up),
            "mFRRMarginalPriceDownEUR": down,
            "mFRRMarginalPriceDownDKK": _dkk(down),
        }
    ]


def _mfrr_energy(m: SampleMarket, d: Dataset, t: datetime, area: str) -> list[dict[str, Any]]:
    direction, _, up, down = m.imbalance(t, area)
    return [
        {
            **_times(d, t),
            "PriceArea": area,
            "mFRRSAUpReqMW": 40 if direction > 0 else None,
            "mFRRSAUpEUR": up,
            "mFRRSADownReqMW": 40 if direction < 0 else None,
            "mFRRSADownEUR": down,
            "TotalmFRRUpMW": 40 if direction > 0 else 0,
            "TotalmFRRDownMW": 40 if direction < 0 else 0,
        }
    ]


def _regulating(m: SampleMarket, d: Dataset, t: datetime, area: str) -> list[dict[str, Any]]:
    direction, imb, up, down = m.imbalance(t, area)
    return [
        {
            **_times(d, t),
            "PriceArea": area,
            "ImbalanceMWh": float(direction * 60),
            "ImbalancePriceEUR": imb,
            "ImbalancePriceDKK": _dkk(imb),
            "BalancingPowerPriceUpEUR": up,
            "BalancingPowerPriceUpDKK": _dkk(up),
            "BalancingPowerPriceDownEUR": down,
            "BalancingPowerPriceDownDKK": _dkk(down),
        }
    ]


def _fcr_nd(m: SampleMarket, d: Dataset, t: datetime, area: str) -> list[dict[str, Any]]:
    rows = []
    for name, product, direction, volume in (
        ("FCR-N", "fcr_n", "symmetric", 7.9),
        ("FCR-D upp", "fcr_d", "up", 60.9),
        ("FCR-D ned", "fcr_d", "down", 60.7),
    ):
        price = m.capacity_eur(t, product, direction)
        rows.append(
            {
                **_times(d, t),
                "PriceArea": "DK2",
                "ProductName": name,
                "AuctionType": "Total",
                "PurchasedVolumeLocal": volume,
                "PurchasedVolumeTotal": round(volume * 9.5, 1),
                "PriceTotalEUR": price,
            }
        )
    return rows


def _fcr_dk1(m: SampleMarket, d: Dataset, t: datetime, area: str) -> list[dict[str, Any]]:
    eur = m.capacity_eur(t, "fcr_dk1", "symmetric")
    return [
        {
            **_times(d, t),
            "FCRdomestic_MW": 6.0,
            "FCRabroad_MW": 23.0,
            "FCRcross_EUR": eur,
            "FCRcross_DKK": round(eur * EUR_DKK, 2),
            "FCRdk_EUR": eur,
            "FCRdk_DKK": round(eur * EUR_DKK, 2),
        }
    ]


def _capacity(product: str) -> Any:
    def rows(m: SampleMarket, d: Dataset, t: datetime, area: str) -> list[dict[str, Any]]:
        up, down = m.capacity_eur(t, product, "up"), m.capacity_eur(t, product, "down")
        return [
            {
                **_times(d, t),
                "PriceArea": area,
                "UpDemandMW": 300.0 if area == "DK1" else 250.0,
                "UpProcuredMW": 310.0 if area == "DK1" else 257.0,
                "UpPriceEUR": up,
                "UpPriceDKK": _dkk(up),
                "DownDemandMW": 0.0,
                "DownProcuredMW": 3.0,
                "DownPriceEUR": down,
                "DownPriceDKK": _dkk(down),
            }
        ]

    return rows


_ROWS = {
    "DayAheadPrices": _day_ahead,
    "Elspotprices": _day_ahead,
    "ImbalancePrice": _imbalance,
    "MfrrEnergyActivationMarket": _mfrr_energy,
    "RegulatingBalancePowerdata": _regulating,
    "FcrNdDK2": _fcr_nd,
    "FcrDK1": _fcr_dk1,
    "MfrrCapacityMarket": _capacity("mfrr"),
    "AfrrReservesNordic": _capacity("afrr"),
}


def sample_records(
    market: SampleMarket, dataset: Dataset, start: datetime, end: datetime, areas: tuple[str, ...]
) -> Iterator[dict[str, Any]]:
    """Yield sample records in EDS format for every interval in [start, end), sorted by time."""
    rows = _ROWS[dataset.name]
    per_area = areas if dataset.area_column and dataset.name != "FcrNdDK2" else ("DK1",)
    t = start.astimezone(UTC)
    step = timedelta(minutes=dataset.minutes)
    while t < end:
        for area in per_area:
            yield from rows(market, dataset, t, area)
        t += step
