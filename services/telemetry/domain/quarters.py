"""15-minute aggregates per site from its readings, UTC-aligned, with gaps marked and never filled.

Energy comes from the meter only. Between two consecutive readings the meter delta is split over the
quarters the interval overlaps, in proportion to time; so a site's quarters add up to its meter delta
exactly, and `energy_apportioned_kwh` says how much of a quarter came from such a split.
A quarter is closed once the site has reported `grace_s` past its end (late readings before that are
sorted in); a quarter no reading reaches is published MISSING (no energy) once the site stays silent,
and republished ESTIMATED with its share of the delta when the site returns.
"""

from __future__ import annotations

import bisect
import functools
import itertools
from dataclasses import astuple, dataclass, field, replace
from datetime import UTC, datetime
from operator import attrgetter
from typing import Any, NamedTuple

import orjson

from hybridpool_shared.messages import AggregateQuality, QuarterAggregated, TelemetryReported

QUARTER_S = 900.0
_new = tuple.__new__
MIN_COP_ENERGY_KWH = 0.01
_T = attrgetter("t")


class Sample(NamedTuple):
    """One reading, reduced to what aggregates need (t in UTC epoch seconds)."""

    t: float
    meter_kwh: float
    power_kw: float = 0.0
    heat_kw: float = 0.0
    indoor_c: float = 0.0
    outdoor_c: float = 0.0
    hp_running: bool = False
    boiler_running: bool = False


def sample_of(r: TelemetryReported, t: float | None = None) -> Sample:
    """Return the part of a reading the quarter aggregates use (t: its epoch seconds, if known)."""
    return _new(  # skips NamedTuple's Python-level __new__: this runs for every reading
        Sample,
        (
            r.measured_at.timestamp() if t is None else t,
            r.meter_reading_kwh,
            r.electric_power_kw,
            r.heat_power_kw,
            r.indoor_temp_c,
            r.outdoor_temp_c,
            r.hp_running,
            r.boiler_running,
        ),
    )


class ClosedQuarter(NamedTuple):
    """A finished quarter: the fields of QuarterAggregated, built without pydantic on the hot path.

    Validating a QuarterAggregated per closed quarter cost more than aggregating it; the values come
    from this module alone and meet the model's constraints by construction, which the unit tests check
    by validating to_json_bytes() strictly. message() returns the validated model.
    """

    site_id: str
    interval_start: datetime
    interval_end: datetime
    quality: AggregateQuality
    readings: int
    indoor_temp_min_c: float | None = None
    indoor_temp_max_c: float | None = None
    outdoor_temp_mean_c: float | None = None
    energy_kwh: float | None = None
    mean_power_kw: float | None = None
    heat_energy_kwh: float | None = None
    cop_measured: float | None = None
    hp_running_share: float | None = None
    coverage_share: float | None = None
    energy_apportioned_kwh: float | None = None
    revised: bool = False

    def kafka_key(self) -> bytes:
        """Key by site, as QuarterAggregated does."""
        return self.site_id.encode()

    def to_json_bytes(self) -> bytes:
        """Return the QuarterAggregated JSON of this quarter."""
        doc = dict(zip(self._fields, self, strict=True))
        doc["schema_version"] = QuarterAggregated.SCHEMA_VERSION
        doc["interval_minutes"] = 15
        return orjson.dumps(doc, option=orjson.OPT_UTC_Z)

    def message(self) -> QuarterAggregated:
        """Return the validated QuarterAggregated."""
        return QuarterAggregated.from_json_bytes(self.to_json_bytes())


class MeterOrderError(ValueError):
    """A reading's meter value contradicts its neighbours in time."""


@dataclass
class _Acc:
    energy: float = 0.0
    apportioned: float = 0.0
    heat: float = 0.0
    hp_heat: float = 0.0
    hp_el: float = 0.0
    running_s: float = 0.0
    covered_s: float = 0.0
    longest_s: float = 0.0


@dataclass
class _Pending:
    """A quarter closed while its site was silent: its tail waits for the site's next reading."""

    start: float
    acc: _Acc
    inside: list[Sample]


@dataclass
class _Site:
    open_from: float
    anchor: Sample | None = None
    samples: list[Sample] = field(default_factory=list)
    pending: list[_Pending] = field(default_factory=list)

    def latest(self) -> Sample | None:
        return self.samples[-1] if self.samples else self.anchor


def floor_quarter_s(t: float) -> float:
    """Return the start of the UTC quarter that contains epoch second t."""
    return t - t % QUARTER_S


class QuarterAggregator:
    """Open quarters of many sites; feed readings with add(), collect finished quarters with close_*()."""

    def __init__(self, max_gap_s: float = 300.0, grace_s: float = 120.0) -> None:
        self.max_gap_s = max_gap_s
        self.grace_s = grace_s
        self.sites: dict[str, _Site] = {}
        self.late = 0
        self.reshaped: set[str] = set()  # sites whose quarter or pending list changed, not just their samples

    def add(self, site_id: str, s: Sample) -> bool:
        """Insert a reading; return False for a duplicate or one too late for its (closed) quarter."""
        site = self.sites.get(site_id)
        if site is None:
            self.sites[site_id] = _Site(open_from=floor_quarter_s(s.t), samples=[s])
            self.reshaped.add(site_id)
            return True
        samples = site.samples
        if samples and s.t > samples[-1].t and s.t >= site.open_from:  # the usual case: the newest
            if s.meter_kwh < samples[-1].meter_kwh:
                raise MeterOrderError(f"meter {s.meter_kwh} kWh out of order with its neighbours in time")
            samples.append(s)
            return True
        if site.anchor is not None and s.t <= site.anchor.t:
            self.late += s.t < site.anchor.t
            return False
        pos = bisect.bisect_left(site.samples, s.t, key=_T)
        if pos < len(site.samples) and site.samples[pos].t == s.t:
            return False
        before = site.samples[pos - 1] if pos else site.anchor
        after = site.samples[pos] if pos < len(site.samples) else None
        if (before and s.meter_kwh < before.meter_kwh) or (after and s.meter_kwh > after.meter_kwh):
            raise MeterOrderError(f"meter {s.meter_kwh} kWh out of order with its neighbours in time")
        if s.t < site.open_from:
            self.late += 1
            return False
        site.samples.insert(pos, s)
        return True

    def close_ready(self, site_id: str) -> list[ClosedQuarter]:
        """Return every quarter of a site that its readings have moved past by the grace time."""
        out: list[ClosedQuarter] = []
        self.close_ready_into(site_id, out)
        return out

    def close_ready_into(self, site_id: str, out: list[ClosedQuarter]) -> None:
        """Append the quarters close_ready would return to out (no list per site on the hot path)."""
        site = self.sites[site_id]
        latest = site.samples[-1] if site.samples else site.anchor
        due = latest is not None and latest.t >= site.open_from + QUARTER_S + self.grace_s
        if not (due or (site.pending and site.samples)):
            return
        if site.pending and site.samples:
            out += self._revise(site_id, site)
        while latest is not None and latest.t >= site.open_from + QUARTER_S + self.grace_s:
            out.append(self._close(site_id, site))
        self.reshaped.add(site_id)

    def close_idle(self, site_id: str, site_now_s: float) -> list[ClosedQuarter]:
        """Close the quarters of a silent site that ended grace_s before site_now_s (MISSING if unreached)."""
        site = self.sites[site_id]
        out = []
        while site_now_s >= site.open_from + QUARTER_S + self.grace_s:
            out.append(self._close(site_id, site))
        if out:
            self.reshaped.add(site_id)
        return out

    def snapshot(self, site_id: str) -> bytes:
        """Return a site's open quarter (and quarters awaiting revision) as text: a header, then samples.

        One line per sample, so newly added samples can be appended (see sample_lines) instead of
        rewriting the whole quarter with every reading.
        """
        site = self.sites[site_id]
        header = {
            "open_from": site.open_from,
            "anchor": list(site.anchor) if site.anchor else None,
            "pending": [[p.start, astuple(p.acc), [list(s) for s in p.inside]] for p in site.pending],
        }
        return orjson.dumps(header) + b"\n" + sample_lines(site.samples)

    def restore(self, site_id: str, text: bytes) -> None:
        """Take over a site's open quarter from a snapshot (plus appended samples)."""
        head, *lines = text.splitlines()
        header: dict[str, Any] = orjson.loads(head)
        anchor = Sample(*header["anchor"]) if header["anchor"] else None
        samples: dict[float, Sample] = {}
        for line in lines:
            s = Sample(*orjson.loads(line))
            if anchor is None or s.t > anchor.t:  # an appended line may repeat one a snapshot holds
                samples[s.t] = s
        self.sites[site_id] = _Site(
            open_from=header["open_from"],
            anchor=anchor,
            samples=sorted(samples.values(), key=_T),
            pending=[
                _Pending(start, _Acc(*acc), [Sample(*s) for s in inside])
                for start, acc, inside in header["pending"]
            ],
        )

    def _close(self, site_id: str, site: _Site) -> ClosedQuarter:
        start = site.open_from
        end = start + QUARTER_S
        points = ([site.anchor] if site.anchor else []) + site.samples
        acc = _Acc()
        for a, b in itertools.pairwise(points):
            if b.t > start and a.t < end:
                _add_segment(acc, a, b, max(a.t, start), min(b.t, end))
        inside = [p for p in points if start <= p.t < end]
        if not points or points[-1].t < end:
            site.pending.append(_Pending(start, replace(acc), inside))
        keep = bisect.bisect_right(site.samples, end, key=_T)
        if keep:
            site.anchor = site.samples[keep - 1]
            del site.samples[:keep]
        site.open_from = end
        return _message(site_id, start, acc, inside, self.max_gap_s)

    def _revise(self, site_id: str, site: _Site) -> list[ClosedQuarter]:
        """Give quarters closed during a silence their share of the delta that bridges it."""
        a, b = site.anchor, site.samples[0]
        out = []
        for p in site.pending:
            end = p.start + QUARTER_S
            if a is not None and b.t > p.start and a.t < end:
                _add_segment(p.acc, a, b, max(a.t, p.start), min(b.t, end))
            out.append(_message(site_id, p.start, p.acc, p.inside, self.max_gap_s)._replace(revised=True))
        site.pending.clear()
        return out


def sample_lines(samples: list[Sample]) -> bytes:
    """Return samples as snapshot lines (each ends with a newline)."""
    if len(samples) == 1:  # the usual case: a site's one new reading in a batch, at half the cost
        return orjson.dumps(list(samples[0])) + b"\n"
    return b"".join(orjson.dumps(list(s)) + b"\n" for s in samples)


def _add_segment(acc: _Acc, a: Sample, b: Sample, lo: float, hi: float) -> None:
    span = b.t - a.t
    share = (hi - lo) / span
    energy = (b.meter_kwh - a.meter_kwh) * share
    acc.energy += energy
    if share < 1.0:
        acc.apportioned += energy
    heat = (a.heat_kw + b.heat_kw) / 2.0 * (hi - lo) / 3600.0
    acc.heat += heat
    if not (a.boiler_running or b.boiler_running):
        acc.hp_heat += heat
        acc.hp_el += energy
    acc.running_s += (a.hp_running + b.hp_running) / 2.0 * (hi - lo)
    acc.covered_s += hi - lo
    acc.longest_s = max(acc.longest_s, span)


def _message(site_id: str, start: float, acc: _Acc, inside: list[Sample], max_gap_s: float) -> ClosedQuarter:
    begin, end = _quarter_bounds(start)
    n = len(inside)
    indoor_min = min((s.indoor_c for s in inside), default=None)
    indoor_max = max((s.indoor_c for s in inside), default=None)
    outdoor_mean = sum(s.outdoor_c for s in inside) / n if n else None
    if acc.covered_s == 0:
        return ClosedQuarter(
            site_id, begin, end, AggregateQuality.MISSING, n, indoor_min, indoor_max, outdoor_mean
        )
    full = acc.covered_s >= QUARTER_S - 1e-6
    gap = acc.longest_s > max_gap_s
    quality = AggregateQuality.MEASURED if full and not gap else AggregateQuality.ESTIMATED
    cop = acc.hp_heat / acc.hp_el if acc.hp_el >= MIN_COP_ENERGY_KWH else None
    return ClosedQuarter(
        site_id,
        begin,
        end,
        quality,
        n,
        indoor_min,
        indoor_max,
        outdoor_mean,
        energy_kwh=acc.energy,
        mean_power_kw=acc.energy / (acc.covered_s / 3600.0),
        heat_energy_kwh=acc.heat,
        cop_measured=cop,
        hp_running_share=min(1.0, acc.running_s / acc.covered_s),
        coverage_share=min(1.0, acc.covered_s / QUARTER_S),
        energy_apportioned_kwh=acc.apportioned,
    )


@functools.lru_cache(maxsize=1024)
def _quarter_bounds(start: float) -> tuple[datetime, datetime]:
    """Return a quarter's start and end as aware UTC datetimes (every site closes the same few)."""
    return datetime.fromtimestamp(start, tz=UTC), datetime.fromtimestamp(start + QUARTER_S, tz=UTC)
