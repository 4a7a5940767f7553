"""Reaction-time maths: a site's phases after a command, rolling per-site profiles, activation compliance.

Redis key read by bidding (written by dispatch): `dispatch:reaction_profile:<site_id>` holds a hash with
one field `json`, a serialised `ReactionProfile` (median/p90 seconds per phase over the last
`PROFILE_WINDOW` commands and the share of commands the site never responded to).
"""

from __future__ import annotations

import csv
import io
import itertools
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

PROFILE_KEY_PREFIX = "dispatch:reaction_profile:"
PROFILE_WINDOW = 30
FIRST_CHANGE_SHARE = 0.02  # just above the noise: the change has begun
STEP_SHARE = 0.5  # a first move this large between two readings is a step, not a ramp
PLATEAU_WINDOWS = 3  # a level flat this many stable windows is where the change really ended
EXPECTED_TRUST_SHARE = 0.2  # a settled change this far from the expected one replaces it
STABLE_BAND_SHARE = 0.05
NOISE_SIGMAS = 3.0


def profile_key(site_id: str) -> str:
    """Return the Redis key of a site's reaction profile."""
    return PROFILE_KEY_PREFIX + site_id


@dataclass(frozen=True)
class PowerSample:
    """One electric power reading of a site."""

    at: datetime
    power_kw: float


@dataclass(frozen=True)
class ReactionPhases:
    """When each phase of a site's reaction was first observed (None: not reached)."""

    first_change_at: datetime | None
    reached_50_at: datetime | None
    reached_90_at: datetime | None
    stable_at: datetime | None
    observed_change_kw: float | None
    complete: bool

    @property
    def responded(self) -> bool:
        """Return True if the site's power moved in the expected direction at all."""
        return self.first_change_at is not None


def noise_kw(samples: Sequence[float], floor_kw: float = 0.005) -> float:
    """Return a robust noise estimate (MAD of successive differences), at least floor_kw."""
    if len(samples) < 3:
        return floor_kw
    diffs = [b - a for a, b in itertools.pairwise(samples)]
    mad = statistics.median(abs(d - statistics.median(diffs)) for d in diffs)
    return max(floor_kw, 1.4826 * mad / math.sqrt(2))


def measure_reaction(
    sent_at: datetime,
    baseline_kw: float,
    expected_change_kw: float,
    samples: Sequence[PowerSample],
    *,
    site_noise_kw: float,
    stable_window: timedelta = timedelta(minutes=2),
    give_up_after: timedelta = timedelta(minutes=20),
    final: bool = False,
) -> ReactionPhases:
    """Find first change, 50 %, 90 % and stable after sent_at, relative to the expected change.

    Crossings are interpolated between readings. Stable = within 5 % (or the noise) of the change and
    staying there a whole window. If power went flat at a level more than EXPECTED_TRUST_SHARE away
    from the expected change for PLATEAU_WINDOWS windows, that level becomes the reference. When the
    measurement closes regardless (`final`, or the readings reach give_up_after) before such a plateau,
    the level of a flat last window is the reference instead: otherwise a guessed expected change (say
    1.8 kW for a HP that settles at 4 kW) dates 50 % and 90 % far too early, only because the site
    settled a little late.
    """
    sign = 1.0 if expected_change_kw >= 0 else -1.0
    after = sorted((s for s in samples if s.at > sent_at), key=lambda s: s.at)
    times = [sent_at, *(s.at for s in after)]
    moved = [0.0, *(sign * (s.power_kw - baseline_kw) for s in after)]
    noise_floor = NOISE_SIGMAS * site_noise_kw
    size = abs(expected_change_kw)
    first = _crossing(times, moved, max(noise_floor, FIRST_CHANGE_SHARE * size), STEP_SHARE * size)
    slack = noise_floor  # once inside the band, noise alone must not throw the reading out again
    stable_at = _stable_at(
        times, moved, size, max(noise_floor, STABLE_BAND_SHARE * size), slack, stable_window
    )
    timed_out = bool(after) and after[-1].at - sent_at >= give_up_after
    if stable_at is None:
        band = max(noise_floor, STABLE_BAND_SHARE * size)
        long_window = PLATEAU_WINDOWS * stable_window
        level: float | None = None
        flat = _flat_from(after, first, band, long_window)
        if flat is not None:
            level = statistics.fmean(
                m for t, m in zip(times, moved, strict=True) if flat <= t <= flat + long_window
            )
        elif final or timed_out:
            level = _settled_tail(times, moved, first, band, stable_window)
        if level is not None and level >= noise_floor and abs(level - size) > EXPECTED_TRUST_SHARE * size:
            size = level  # the expected change was off: the change actually reached is the reference
            first = _crossing(times, moved, max(noise_floor, FIRST_CHANGE_SHARE * size), STEP_SHARE * size)
            band = max(noise_floor, STABLE_BAND_SHARE * size)
            stable_at = _stable_at(times, moved, size, band, slack, stable_window)
    observed = after[-1].power_kw - baseline_kw if after else None
    return ReactionPhases(
        first_change_at=first,
        reached_50_at=_crossing(times, moved, 0.5 * size) if size > 0 else None,
        reached_90_at=_crossing(times, moved, 0.9 * size) if size > 0 else None,
        stable_at=stable_at,
        observed_change_kw=observed,
        complete=stable_at is not None or timed_out,
    )


def _between(t0: datetime, v0: float, t1: datetime, v1: float, target: float) -> datetime:
    """Interpolate linearly when a value moving from v0 (at t0) to v1 (at t1) passed target."""
    if v1 == v0:
        return t1
    share = min(1.0, max(0.0, (target - v0) / (v1 - v0)))
    return t0 + (t1 - t0) * share


def _fitted_entry(
    times: Sequence[datetime], moved: Sequence[float], i: int, size: float, band: float
) -> datetime:
    """Return when the change entered the band, from a line fitted to the readings around reading i.

    Near the end of a slow approach the slope is small and one noisy reading moves a plain crossing
    by a whole interval; a local least-squares line through five readings is steadier.
    """
    lo, hi = max(0, i - 2), min(len(moved), i + 3)
    fallback = _between(times[i - 1], abs(moved[i - 1] - size), times[i], abs(moved[i] - size), band)
    if hi - lo < 3 or abs(moved[i] - moved[i - 1]) > band / 2:
        return fallback  # a steep approach: the straight line between two readings is the better guess
    xs = [(times[j] - times[i]).total_seconds() for j in range(lo, hi)]
    ys = list(moved[lo:hi])
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx if sxx else 0.0
    target = size - band if moved[i - 1] < size else size + band
    if slope == 0.0 or (target - my) / slope + mx < xs[0] or (target - my) / slope + mx > xs[-1]:
        return fallback
    return times[i] + timedelta(seconds=(target - my) / slope + mx)


def _crossing(
    times: Sequence[datetime], moved: Sequence[float], level: float, step_like: float = math.inf
) -> datetime | None:
    """Return when the change first reached level, interpolated between the readings around it.

    A jump larger than step_like between two readings is a step that began anywhere between them:
    then the midpoint is the best guess (a line would put it right after the first reading).
    """
    for i in range(1, len(moved)):
        if moved[i] >= level:
            if moved[i] - moved[i - 1] > step_like:
                return times[i - 1] + (times[i] - times[i - 1]) / 2
            return _between(times[i - 1], moved[i - 1], times[i], moved[i], level)
    return None


def _stable_at(
    times: Sequence[datetime],
    moved: Sequence[float],
    size: float,
    band: float,
    slack: float,
    window: timedelta,
) -> datetime | None:
    """Return when the change entered band around size and then stayed (within band + slack) a window."""
    at: datetime | None = None
    for i in range(1, len(moved)):
        off = abs(moved[i] - size)
        if off > (band if at is None else band + slack):
            at = None
            continue
        if at is None:
            prev = abs(moved[i - 1] - size)
            at = _fitted_entry(times, moved, i, size, band) if prev > band else times[i]
        if times[i] - at >= window:
            return at
    return None


def _settled_tail(
    times: Sequence[datetime],
    moved: Sequence[float],
    since: datetime | None,
    band: float,
    window: timedelta,
) -> float | None:
    """Return the mean change over the last window if it lies after since and stayed within band."""
    if since is None or len(times) < 2 or times[-1] - window < since:
        return None
    tail = [m for t, m in zip(times[1:], moved[1:], strict=True) if t >= times[-1] - window]
    if len(tail) < 2 or max(tail) - min(tail) > band:
        return None
    return statistics.fmean(tail)


def _flat_from(
    after: Sequence[PowerSample], since: datetime | None, band: float, window: timedelta
) -> datetime | None:
    """Return the first reading's time (after since) from which power stays within band for a window."""
    if since is None:
        return None
    for i, start in enumerate(after):
        if start.at < since:
            continue
        if after[-1].at - start.at < window:
            return None
        end = start.at + window
        if all(abs(s.power_kw - start.power_kw) <= band for s in after[i:] if s.at <= end):
            return start.at
    return None


class PhaseStats(BaseModel):
    """Median and 90th percentile of one phase's seconds."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    median_s: float | None = None
    p90_s: float | None = None
    count: int = 0


class ReactionProfile(BaseModel):
    """A site's rolling reaction profile (Redis `dispatch:reaction_profile:<site_id>`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    site_id: str
    samples: int = Field(ge=0)
    never_responded_share: float = Field(ge=0, le=1)
    ack_s: PhaseStats
    first_change_s: PhaseStats
    reached_50_s: PhaseStats
    reached_90_s: PhaseStats
    stable_s: PhaseStats
    updated_at: datetime

    def to_redis(self) -> dict[str, str]:
        """Return the hash fields to store."""
        return {"json": self.model_dump_json()}

    @classmethod
    def from_redis(cls, fields: dict[bytes, bytes]) -> ReactionProfile:
        """Parse a hash read from Redis."""
        return cls.model_validate_json(fields[b"json"])


@dataclass(frozen=True)
class ReactionRecord:
    """Seconds from sending to each phase for one command (None: never reached)."""

    ack_s: float | None
    first_change_s: float | None
    reached_50_s: float | None
    reached_90_s: float | None
    stable_s: float | None
    responded: bool


def percentile(values: Sequence[float], q: float) -> float:
    """Return the q-quantile (0..1) with linear interpolation."""
    data = sorted(values)
    if not data:
        raise ValueError("percentile of no values")
    pos = q * (len(data) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)


def _stats(values: Sequence[float | None]) -> PhaseStats:
    seen = [v for v in values if v is not None]
    if not seen:
        return PhaseStats()
    return PhaseStats(median_s=statistics.median(seen), p90_s=percentile(seen, 0.9), count=len(seen))


def build_profile(site_id: str, records: Sequence[ReactionRecord], now: datetime) -> ReactionProfile:
    """Summarise a site's last reactions (newest first, at most PROFILE_WINDOW used)."""
    recent = list(records)[:PROFILE_WINDOW]
    never = sum(1 for r in recent if not r.responded)
    return ReactionProfile(
        site_id=site_id,
        samples=len(recent),
        never_responded_share=never / len(recent) if recent else 0.0,
        ack_s=_stats([r.ack_s for r in recent]),
        first_change_s=_stats([r.first_change_s for r in recent]),
        reached_50_s=_stats([r.reached_50_s for r in recent]),
        reached_90_s=_stats([r.reached_90_s for r in recent]),
        stable_s=_stats([r.stable_s for r in recent]),
        updated_at=now,
    )


# --- per activation: response curve and compliance ------------------------------------------------


class ProductRule(StrEnum):
    """Which rule set a checkpoint comes from."""

    PRODUCT = "product"
    SEED = "seed"
    TODAY = "today"


@dataclass(frozen=True)
class Checkpoint:
    """A share of the requested power that must be reached within a number of seconds."""

    share: float
    within_s: float
    rule: ProductRule = ProductRule.PRODUCT


REQUIREMENTS: dict[str, tuple[Checkpoint, ...]] = {
    "fcr_n": (
        Checkpoint(0.63, 60),
        Checkpoint(1.0, 180),
        Checkpoint(1.0, 150, ProductRule.SEED),
    ),
    "fcr_d_up": (Checkpoint(0.5, 5), Checkpoint(1.0, 30)),
    "fcr_d_down": (Checkpoint(0.5, 5), Checkpoint(1.0, 30)),
    "fcr_dk1": (Checkpoint(1.0, 30),),
    "mfrr_energy": (Checkpoint(1.0, 750), Checkpoint(1.0, 900, ProductRule.TODAY)),
    "mfrr_capacity": (Checkpoint(1.0, 750), Checkpoint(1.0, 900, ProductRule.TODAY)),
}
FULL_SHARE_TOLERANCE = 0.98  # "100 %" within metering noise


@dataclass(frozen=True)
class CurvePoint:
    """The pool's delivered and requested change at one instant (positive in the activation's direction)."""

    at: datetime
    delivered_kw: float
    requested_kw: float


class CheckpointResult(BaseModel):
    """Whether one checkpoint was met."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    share: float
    within_s: float
    rule: str
    reached_after_s: float | None
    met: bool


class ActivationReport(BaseModel):
    """The pool's response to one activation and its compliance verdict."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    activation_id: str
    product: str
    direction: str
    requested_kw: float
    start: datetime
    end: datetime
    requested_energy_kwh: float
    delivered_energy_kwh: float
    delivered_share: float
    time_to_50_s: float | None
    time_to_100_s: float | None
    checkpoints: tuple[CheckpointResult, ...]
    compliant: bool
    verdict: str
    reasons: tuple[str, ...] = ()
    curve: tuple[tuple[datetime, float, float], ...] = ()
    units_dispatched: int = 0
    units_replaced: int = 0
    units_unresponsive: int = 0

    def curve_csv(self) -> str:
        """Return the response curve as CSV (at, seconds, delivered, requested)."""
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(["at_utc", "seconds_since_start", "delivered_kw", "requested_kw"])
        for at, delivered, requested in self.curve:
            secs = (at - self.start).total_seconds()
            writer.writerow([at.isoformat(), f"{secs:.1f}", f"{delivered:.3f}", f"{requested:.3f}"])
        return out.getvalue()


def _energy_kwh(points: Sequence[tuple[datetime, float]], start: datetime, end: datetime) -> float:
    """Integrate a step-held series over [start, end) in kWh."""
    total = 0.0
    inside = [(t, v) for t, v in points if start <= t < end]
    for (t0, v0), (t1, _) in zip(inside, [*inside[1:], (end, 0.0)], strict=False):
        total += v0 * (t1 - t0).total_seconds() / 3600
    return total


@dataclass(frozen=True)
class ActivationFacts:
    """What the report needs to know about an activation besides its curve."""

    activation_id: str
    product: str
    direction: str
    requested_kw: float
    start: datetime
    end: datetime
    units_dispatched: int = 0
    units_replaced: int = 0
    units_unresponsive: int = 0
    shortfall_reason: str = ""


def activation_report(facts: ActivationFacts, curve: Sequence[CurvePoint]) -> ActivationReport:
    """Compute delivered vs requested energy, time to 50 %/100 % and the compliance verdict."""
    points = sorted(curve, key=lambda p: p.at)
    t50 = _time_to(points, facts.start, 0.5)
    t100 = _time_to(points, facts.start, FULL_SHARE_TOLERANCE)
    results = tuple(_checkpoint(points, facts.start, c) for c in REQUIREMENTS.get(facts.product, ()))
    requested = _energy_kwh([(p.at, p.requested_kw) for p in points], facts.start, facts.end)
    delivered = _energy_kwh([(p.at, max(0.0, p.delivered_kw)) for p in points], facts.start, facts.end)
    reasons = [
        f"{c.share:.0%} not reached within {c.within_s:.0f} s ({c.rule} rule)" for c in results if not c.met
    ]
    if facts.shortfall_reason:
        reasons.insert(0, facts.shortfall_reason)
    compliant = bool(results) and all(c.met for c in results)
    verdict = "passed" if compliant else "failed"
    return ActivationReport(
        activation_id=facts.activation_id,
        product=facts.product,
        direction=facts.direction,
        requested_kw=facts.requested_kw,
        start=facts.start,
        end=facts.end,
        requested_energy_kwh=requested,
        delivered_energy_kwh=delivered,
        delivered_share=delivered / requested if requested > 0 else 0.0,
        time_to_50_s=t50,
        time_to_100_s=t100,
        checkpoints=results,
        compliant=compliant,
        verdict=verdict,
        reasons=tuple(reasons),
        curve=tuple((p.at, p.delivered_kw, p.requested_kw) for p in points),
        units_dispatched=facts.units_dispatched,
        units_replaced=facts.units_replaced,
        units_unresponsive=facts.units_unresponsive,
    )


def _time_to(points: Sequence[CurvePoint], start: datetime, share: float) -> float | None:
    for p in points:
        if p.at >= start and p.requested_kw > 0 and p.delivered_kw >= share * p.requested_kw:
            return (p.at - start).total_seconds()
    return None


def _checkpoint(points: Sequence[CurvePoint], start: datetime, c: Checkpoint) -> CheckpointResult:
    share = FULL_SHARE_TOLERANCE if c.share >= 1.0 else c.share
    after = _time_to(points, start, share)
    return CheckpointResult(
        share=c.share,
        within_s=c.within_s,
        rule=c.rule.value,
        reached_after_s=after,
        met=after is not None and after <= c.within_s,
    )
