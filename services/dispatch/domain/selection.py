"""Choosing units: running HPs off for up, rested idle HPs on for down; cheapest, fair, spares kept."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from hybridpool_shared.messages import Direction
from services.dispatch.domain.fleet import Unit

START_PENALTY_EUR_PER_MWH = 25.0  # one recent start costs as much as this much balance price
MIN_USEFUL_KW = 0.2


@dataclass(frozen=True)
class Pick:
    """A unit chosen to switch, with the change it is expected to deliver."""

    site_id: str
    expected_kw: float


@dataclass(frozen=True)
class Selection:
    """The units picked for a need, and what was left."""

    picks: tuple[Pick, ...]
    picked_kw: float
    available_kw: float
    spare_kw: float
    blocked_by_rules: int
    offline: int

    def shortfall_kw(self, need_kw: float) -> float:
        """Return how much of the need could not be covered."""
        return max(0.0, need_kw - self.picked_kw)


def _cost(unit: Unit, up: bool, now_s: float) -> tuple[float, str]:
    """Lower is better: up switches off the HPs whose heat is least worth it (lowest balance price)."""
    price = unit.balance_price_eur_per_mwh or 0.0
    base = price if up else -price
    return base + START_PENALTY_EUR_PER_MWH * unit.recent_starts(now_s), unit.site_id


def choose_units(
    units: Iterable[Unit],
    direction: Direction,
    need_kw: float,
    now_s: float,
    *,
    exclude: Mapping[str, object] | frozenset[str] = frozenset(),
    spare_share: float = 0.1,
    area: str | None = None,
) -> Selection:
    """Pick the cheapest eligible units until need_kw is covered, keeping spare_share of capacity back.

    With an area, units known to be in another bidding zone do not count: power moved there is not
    delivered. A unit without master data (zone unknown) still counts; the registry is the authority.
    """
    up = direction is Direction.UP  # once: this runs over every unit of the pool while an activation waits
    candidates: list[tuple[tuple[float, str], float]] = []  # (cost, kw)
    blocked = offline = 0
    for u in units:
        if (
            u.site_id in exclude
            or u.slow
            or not u.in_pool
            or (area is not None and u.area not in (None, area))
        ):
            continue
        if not u.online(now_s):
            offline += 1
        elif not (u.can_stop(now_s) if up else u.can_start(now_s)):
            blocked += 1
        else:
            kw = u.power_kw if up else u.expected_on_kw()
            if kw >= MIN_USEFUL_KW:
                candidates.append((_cost(u, up, now_s), kw))
    candidates.sort()  # costs end in the unique site id: no ties
    available = sum(kw for _, kw in candidates)
    usable = max(need_kw, available * (1 - spare_share)) if need_kw > 0 else 0.0
    picks: list[Pick] = []
    picked = 0.0
    for (_, site_id), kw in candidates:
        if picked >= need_kw or picked >= usable:
            break
        picks.append(Pick(site_id, kw))
        picked += kw
    return Selection(tuple(picks), picked, available, available - picked, blocked, offline)
