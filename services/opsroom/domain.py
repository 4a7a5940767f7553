"""Ops-room rules without I/O: site status, fleet aggregates, activation compliance, revenue, audit chain."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

GENESIS_HASH = "0" * 64


class SiteStatus(StrEnum):
    """How fresh a site's data is, as the operator sees it."""

    ONLINE = "online"
    STALE = "stale"
    OFFLINE = "offline"


@dataclass(frozen=True)
class Freshness:
    """Ages beyond which a site's data counts as stale or offline."""

    stale_after_s: float
    offline_after_s: float


def site_status(gateway_status: str, measured_at: datetime, now: datetime, fresh: Freshness) -> SiteStatus:
    """Classify a site from its last reading's age and its gateway's own status."""
    age_s = (now - measured_at).total_seconds()
    if age_s > fresh.offline_after_s or gateway_status == "offline":
        return SiteStatus.OFFLINE
    if age_s > fresh.stale_after_s or gateway_status == "stale":
        return SiteStatus.STALE
    return SiteStatus.ONLINE


@dataclass(frozen=True)
class LiveSite:
    """The part of a site's live state (sitestate.SiteLiveState) the aggregates need."""

    site_id: str
    measured_at: datetime
    electric_power_kw: float
    hp_running: bool
    boiler_running: bool
    gateway_status: str = "ok"
    lockout_ends_at: datetime | None = None
    min_run_ends_at: datetime | None = None

    @classmethod
    def from_json(cls, raw: bytes | str) -> LiveSite:
        """Parse the JSON of a SiteLiveState without full validation (hot path: the whole fleet)."""
        data = json.loads(raw)
        return cls(
            site_id=data["site_id"],
            measured_at=datetime.fromisoformat(data["measured_at"]),
            electric_power_kw=float(data["electric_power_kw"]),
            hp_running=bool(data["hp_running"]),
            boiler_running=bool(data["boiler_running"]),
            gateway_status=str(data.get("gateway_status", "ok")),
            lockout_ends_at=_opt_time(data.get("lockout_ends_at")),
            min_run_ends_at=_opt_time(data.get("min_run_ends_at")),
        )

    def can_start(self, now: datetime) -> bool:
        """Idle and rested: may be switched on (down-regulation)."""
        return not self.hp_running and (self.lockout_ends_at is None or now >= self.lockout_ends_at)

    def can_stop(self, now: datetime) -> bool:
        """Running past its minimum run time: may be switched off (up-regulation)."""
        return self.hp_running and (self.min_run_ends_at is None or now >= self.min_run_ends_at)

    def lockout_remaining_s(self, now: datetime) -> float:
        """Seconds until the HP may start again (0 when free)."""
        if self.lockout_ends_at is None:
            return 0.0
        return max(0.0, (self.lockout_ends_at - now).total_seconds())


def _opt_time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


@dataclass
class FleetSummary:
    """The overview's fleet figures (no per-site data: safe to push every tick)."""

    sites_total: int = 0
    online: int = 0
    stale: int = 0
    offline: int = 0
    excluded: int = 0
    hp_running: int = 0
    on_gas: int = 0
    pool_power_kw: float = 0.0
    up_available_kw: float = 0.0
    down_available_kw: float = 0.0

    @property
    def unhealthy_share(self) -> float:
        """Share of sites whose data is stale or missing."""
        return (self.stale + self.offline) / self.sites_total if self.sites_total else 0.0


def summarise(
    sites: Iterable[LiveSite],
    hp_power_kw: dict[str, float],
    excluded: set[str],
    now: datetime,
    fresh: Freshness,
) -> FleetSummary:
    """Aggregate the fleet: status counts, HP vs gas, pool power and capacity that could be moved now."""
    out = FleetSummary()
    for site in sites:
        out.sites_total += 1
        status = site_status(site.gateway_status, site.measured_at, now, fresh)
        setattr(out, status.value, getattr(out, status.value) + 1)
        if status is SiteStatus.OFFLINE:
            continue
        out.pool_power_kw += site.electric_power_kw
        out.hp_running += site.hp_running
        out.on_gas += site.boiler_running and not site.hp_running
        if site.site_id in excluded:
            out.excluded += 1
            continue
        if status is not SiteStatus.ONLINE:
            continue
        if site.can_stop(now):
            out.up_available_kw += site.electric_power_kw
        elif site.can_start(now):
            out.down_available_kw += hp_power_kw.get(site.site_id, 0.0)
    return out


@dataclass(frozen=True)
class ClearedBid:
    """A bid joined with its clearing result."""

    bid_id: str
    direction: str
    start: datetime
    end: datetime
    capacity_mw: float
    accepted: bool | None
    accepted_mw: float
    price_eur_per_mw_per_h: float | None
    price_eur_per_mwh: float | None


def committed_mw(bids: Iterable[ClearedBid], now: datetime) -> tuple[float, float]:
    """Return (up, down) MW accepted for the period containing now; symmetric bids count both ways."""
    up = down = 0.0
    for bid in bids:
        if not bid.accepted or not bid.start <= now < bid.end:
            continue
        if bid.direction in ("up", "symmetric"):
            up += bid.accepted_mw
        if bid.direction in ("down", "symmetric"):
            down += bid.accepted_mw
    return up, down


def capacity_revenue_eur(bid: ClearedBid) -> float:
    """Capacity payment of an accepted bid: MW × EUR/MW/h × hours (energy is paid on activation)."""
    if not bid.accepted or bid.price_eur_per_mw_per_h is None:
        return 0.0
    hours = (bid.end - bid.start).total_seconds() / 3600
    return bid.accepted_mw * bid.price_eur_per_mw_per_h * hours


NO_BID_REASON = "no bid on market.bids, and bidding's latest plan gives no reason (not in its horizon)"


def hours_without_bid(
    covered: list[tuple[datetime, datetime]],
    now: datetime,
    hi: datetime,
    explained: Sequence[Mapping[str, Any]] = (),
) -> list[dict[str, str]]:
    """Runs of whole hours from the current hour to hi that no bid covers, each with bidding's why.

    explained holds bidding's periods without a bid (area, product, start, end, reason); an hour
    takes the reasons of the periods it overlaps, and runs merge only where the reasons agree.
    """
    periods = [(datetime.fromisoformat(p["start"]), datetime.fromisoformat(p["end"]), p) for p in explained]
    hour = now.replace(minute=0, second=0, microsecond=0)
    runs: list[dict[str, str]] = []
    while hour < hi:
        end = hour + timedelta(hours=1)
        if not any(s < end and e > hour for s, e in covered):
            reason = _why_no_bid(hour, end, periods)
            if runs and runs[-1]["end"] == hour.isoformat() and runs[-1]["reason"] == reason:
                runs[-1]["end"] = end.isoformat()
            else:
                runs.append({"start": hour.isoformat(), "end": end.isoformat(), "reason": reason})
        hour = end
    return runs


def _why_no_bid(
    hour: datetime, end: datetime, periods: list[tuple[datetime, datetime, Mapping[str, Any]]]
) -> str:
    reasons = dict.fromkeys(
        f"{p['area']} {p['product']}: {p['reason']}" for s, e, p in periods if s < end and e > hour
    )
    return "; ".join(reasons) or NO_BID_REASON


# Full-activation deadlines per product (seconds), and the 50 % deadline where the product has one.
FULL_ACTIVATION_S: dict[str, float] = {
    "fcr_n": 150.0,
    "fcr_d_up": 30.0,
    "fcr_d_down": 30.0,
    "fcr_dk1": 30.0,
    "mfrr_capacity": 750.0,
    "mfrr_energy": 750.0,
}
HALF_ACTIVATION_S: dict[str, float] = {"fcr_d_up": 5.0, "fcr_d_down": 5.0, "fcr_dk1": 15.0}
FULL_SHARE = 0.95  # delivered within 5 % of the request counts as 100 %


class Verdict(StrEnum):
    """Whether an activation met its product's response-time rules."""

    PENDING = "pending"
    COMPLIANT = "compliant"
    NON_COMPLIANT = "non_compliant"


@dataclass(frozen=True)
class CurvePoint:
    """One sample of an activation's response: seconds since its start, requested and delivered kW."""

    t_s: float
    requested_kw: float
    delivered_kw: float


@dataclass(frozen=True)
class Compliance:
    """Times to 50 % and 100 % of the requested power and the verdict."""

    t50_s: float | None
    t100_s: float | None
    full_deadline_s: float
    half_deadline_s: float | None
    verdict: Verdict
    reason: str = ""


def first_reach(curve: Sequence[CurvePoint], requested_kw: float, share: float) -> float | None:
    """Return the first time delivered power reached share × requested, or None."""
    for point in curve:
        if point.t_s >= 0 and point.delivered_kw >= share * requested_kw:
            return max(point.t_s, 0.0)
    return None


def assess(curve: Sequence[CurvePoint], product: str, requested_kw: float, elapsed_s: float) -> Compliance:
    """Judge an activation's response curve against its product's deadlines."""
    full = FULL_ACTIVATION_S.get(product, 750.0)
    half = HALF_ACTIVATION_S.get(product)
    t50 = first_reach(curve, requested_kw, 0.5)
    t100 = first_reach(curve, requested_kw, FULL_SHARE)
    if half is not None and ((t50 is None and elapsed_s > half) or (t50 is not None and t50 > half)):
        return Compliance(
            t50, t100, full, half, Verdict.NON_COMPLIANT, f"50 % not reached within {half:.0f} s"
        )
    if t100 is not None and t100 <= full:
        return Compliance(t50, t100, full, half, Verdict.COMPLIANT)
    if elapsed_s > full:
        return Compliance(
            t50, t100, full, half, Verdict.NON_COMPLIANT, f"100 % not reached within {full:.0f} s"
        )
    return Compliance(t50, t100, full, half, Verdict.PENDING)


def at_risk(compliance: Compliance, elapsed_s: float, delivered_kw: float, requested_kw: float) -> bool:
    """An activation is at risk when half its ramp time has passed and less than half is delivered."""
    if compliance.verdict is Verdict.NON_COMPLIANT:
        return True
    if compliance.verdict is Verdict.COMPLIANT:
        return delivered_kw < 0.5 * requested_kw
    return elapsed_s > compliance.full_deadline_s / 2 and delivered_kw < 0.5 * requested_kw


def delivered_kw(direction: str, baseline_kw: float, pool_kw: float) -> float:
    """Power moved by the pool since the baseline: up lowers consumption, down raises it."""
    return baseline_kw - pool_kw if direction == "up" else pool_kw - baseline_kw


@dataclass(frozen=True)
class PoolPlan:
    """The pool's plan per quarter-hour: HPs planned on and their expected power."""

    quarters: list[str]
    hp_on: list[int]
    expected_kw: list[float]
    sites: int
    fallback_sites: int


def pool_plan(site_plans: Sequence[dict[str, Any]]) -> PoolPlan:
    """Sum site plans (each from its own first quarter) into pool totals per quarter."""
    on: dict[datetime, int] = {}
    power: dict[datetime, float] = {}
    for plan in site_plans:
        first = datetime.fromisoformat(plan["first_quarter_start"])
        for i, (hp_on, kw) in enumerate(zip(plan["hp_on"], plan["expected_hp_power_kw"], strict=True)):
            quarter = first + timedelta(minutes=15 * i)
            on[quarter] = on.get(quarter, 0) + bool(hp_on)
            power[quarter] = power.get(quarter, 0.0) + float(kw)
    quarters = sorted(power)
    return PoolPlan(
        quarters=[q.isoformat() for q in quarters],
        hp_on=[on[q] for q in quarters],
        expected_kw=[power[q] for q in quarters],
        sites=len(site_plans),
        fallback_sites=sum(1 for p in site_plans if p.get("fallback")),
    )


@dataclass(frozen=True)
class Histogram:
    """Counts of values in equal-width bins."""

    edges: list[float]
    counts: list[int]


def histogram(values: Sequence[float], bins: int = 20) -> Histogram:
    """Bin values into equal-width bins between their minimum and maximum."""
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return Histogram([], [])
    lo, hi = min(finite), max(finite)
    width = (hi - lo) / bins if hi > lo else 1.0
    counts = [0] * bins
    for value in finite:
        counts[min(int((value - lo) / width), bins - 1)] += 1
    return Histogram([lo + i * width for i in range(bins + 1)], counts)


@dataclass(frozen=True)
class Page:
    """One page of a filtered list."""

    items: list[str]
    total: int
    page: int
    pages: int


def search_page(ids: Iterable[str], labels: dict[str, str], query: str, page: int, page_size: int) -> Page:
    """Filter site ids whose id or label contains query (case-insensitive), sort, and cut one page."""
    needle = query.strip().lower()
    hits = sorted(i for i in ids if not needle or needle in i.lower() or needle in labels.get(i, "").lower())
    pages = max(1, math.ceil(len(hits) / page_size))
    page = min(max(page, 1), pages)
    return Page(hits[(page - 1) * page_size : page * page_size], len(hits), page, pages)


@dataclass(frozen=True)
class ReactionSample:
    """One measured reaction of a site to a command."""

    t50_s: float | None
    responded: bool


@dataclass(frozen=True)
class ReactionProfile:
    """A site's reaction history: how often it answered and how fast it reached 50 %."""

    commands: int
    failures: int
    median_t50_s: float | None


def reaction_profile(samples: Sequence[ReactionSample]) -> ReactionProfile:
    """Summarise a site's reactions."""
    times = sorted(s.t50_s for s in samples if s.t50_s is not None)
    median = None
    if times:
        mid = len(times) // 2
        median = times[mid] if len(times) % 2 else (times[mid - 1] + times[mid]) / 2
    return ReactionProfile(len(samples), sum(not s.responded for s in samples), median)


def seconds_between(start: datetime, end: datetime | None) -> float | None:
    """Return end − start in seconds, or None."""
    return None if end is None else (end - start).total_seconds()


@dataclass(frozen=True)
class AuditDraft:
    """An operator action to record."""

    actor_id: str
    role: str
    action: str
    outcome: str
    site_id: str | None = None
    detail: str = ""


@dataclass(frozen=True)
class AuditRecord:
    """A hash-chained ops-room audit record."""

    seq: int
    recorded_at: str
    actor_id: str
    role: str
    action: str
    outcome: str
    site_id: str | None
    detail: str
    prev_hash: str
    hash: str = field(default="")

    def to_dict(self) -> dict[str, Any]:
        """Return the record as plain JSON-able data."""
        return asdict(self)


def audit_hash(fields: dict[str, Any]) -> str:
    """SHA-256 of a record's canonical JSON without its own hash."""
    body = {k: v for k, v in fields.items() if k != "hash"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def chain_record(draft: AuditDraft, seq: int, prev_hash: str, now: datetime) -> AuditRecord:
    """Link a draft after the record with prev_hash."""
    record = AuditRecord(
        seq=seq,
        recorded_at=now.isoformat(),
        actor_id=_clean(draft.actor_id, 64),
        role=draft.role,
        action=draft.action,
        outcome=draft.outcome,
        site_id=draft.site_id,
        detail=_clean(draft.detail, 500),
        prev_hash=prev_hash,
    )
    return AuditRecord(**{**record.to_dict(), "hash": audit_hash(record.to_dict())})


def verify_audit(records: Sequence[AuditRecord]) -> int | None:
    """Return the seq of the first record whose hash or link is wrong, or None if the chain holds."""
    prev = GENESIS_HASH
    for record in records:
        if record.prev_hash != prev or audit_hash(record.to_dict()) != record.hash:
            return record.seq
        prev = record.hash
    return None


def _clean(text: str, limit: int) -> str:
    # Log injection (CWE-117): no control characters in the trail.
    return "".join(c if c.isprintable() else "?" for c in text)[:limit]


def window(now: datetime, hours_back: float, hours_ahead: float) -> tuple[datetime, datetime]:
    """Return [now − back, now + ahead]."""
    return now - timedelta(hours=hours_back), now + timedelta(hours=hours_ahead)
