"""Aggregation of similar sites into clusters that the optimiser treats as counts of identical units."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt

from services.bidding.domain.inputs import Fleet, FloatArray, IntArray, Options


@dataclass(frozen=True)
class Clusters:
    """Cluster c holds size[c] units described by per-unit means; cluster_of[i] = −1: not optimised.

    Minimum run and lock-out are the cluster's longest (conservative for the optimiser; the per-site
    simulation applies each site's own); the initial state is kept as counts: on0[c] units run at the
    start, pre_on[c, t] of them are still in a minimum run and pre_off[c, t] idle ones still locked out.
    """

    cluster_of: IntArray
    area: list[str]
    size: IntArray
    power_kw: FloatArray
    min_run_q: IntArray
    lockout_q: IntArray
    max_starts_h: IntArray
    on0: FloatArray
    pre_on: FloatArray  # (C, R)
    pre_off: FloatArray  # (C, R)
    weight: FloatArray  # availability × response (mean)
    demand_kw: FloatArray  # (C, T) per unit
    balance: FloatArray  # (C, T)
    storage_kwh: FloatArray
    storage0_kwh: FloatArray
    # the margin rule's variance a(1 − a)(r·P)² per kW of capable power (least in the cluster), and per
    # area its total over every online unit: what the relaxation's linear margin needs
    variance_per_kw: FloatArray | None = None
    variance_total_kw2: dict[str, float] | None = None

    @property
    def count(self) -> int:
        """Return the number of clusters."""
        return int(self.size.shape[0])

    def still_running(self, c: int, t: int) -> float:
        """Units of cluster c that must still run in quarter t (minimum run begun before the horizon)."""
        return float(self.pre_on[c, t]) if t < self.pre_on.shape[1] else 0.0

    def still_locked(self, c: int, t: int) -> float:
        """Units of cluster c still locked out in quarter t (stopped before the horizon)."""
        return float(self.pre_off[c, t]) if t < self.pre_off.shape[1] else 0.0


def _bins(values: FloatArray, groups: list[str], count: int) -> IntArray:
    """Quantile bin of each value within its group (area)."""
    result = np.zeros(values.shape[0], dtype=np.int64)
    if count <= 1:
        return result
    labels = np.array(groups)
    for name in set(groups):
        mask = labels == name
        edges = np.quantile(values[mask], np.linspace(0, 1, count + 1)[1:-1])
        result[mask] = np.searchsorted(edges, values[mask], side="right")
    return result


def build_clusters(fleet: Fleet, options: Options, *, relaxed: bool = False) -> Clusters:
    """Group online sites (each its own cluster when options.cluster is False).

    relaxed: aggregate so that the cluster model is a relaxation of the per-site problem, its optimum a
    lower bound of every per-site plan's objective: counts in units of the mean power (power-weighted),
    the shortest minimum run and lock-out, the most starts, the cheapest boiler and the best response.
    """
    online = np.flatnonzero(fleet.online)
    if options.cluster:
        keys = _cluster_keys(fleet, options)
        _, labels = np.unique(keys[online], axis=0, return_inverse=True)
        labels = labels.reshape(-1)
    else:
        labels = np.arange(online.size)
    cluster_of = np.full(fleet.size, -1, dtype=np.int64)
    cluster_of[online] = labels
    count = int(labels.max(initial=-1)) + 1
    return _relaxed(fleet, cluster_of, count) if relaxed else _aggregate(fleet, cluster_of, count)


def _cluster_keys(fleet: Fleet, options: Options) -> IntArray:
    areas = sorted(set(fleet.area))
    area_idx = np.array([areas.index(a) for a in fleet.area], dtype=np.int64)
    power = np.floor(fleet.power_kw / options.power_bucket_kw).astype(np.int64)
    ratio = fleet.demand_kw.mean(axis=1) / fleet.power_kw
    return np.column_stack(
        [
            area_idx,
            power,
            fleet.max_starts_h,
            _bins(fleet.balance.mean(axis=1), fleet.area, options.price_bins),
            _bins(ratio, fleet.area, options.demand_bins),
            _bins(fleet.storage_kwh / fleet.power_kw, fleet.area, options.storage_bins),
        ]
    )


def _aggregate(fleet: Fleet, cluster_of: IntArray, count: int) -> Clusters:
    members = cluster_of >= 0
    idx = cluster_of[members]
    size = np.bincount(idx, minlength=count).astype(np.int64)

    def total(values: npt.NDArray[np.float64] | npt.NDArray[np.bool_]) -> FloatArray:
        result = np.zeros((count, *values.shape[1:]))
        np.add.at(result, idx, values[members])
        return result

    def mean(values: FloatArray) -> FloatArray:
        result: FloatArray = total(values) / np.maximum(size, 1).reshape((-1,) + (1,) * (values.ndim - 1))
        return result

    def longest(values: IntArray) -> IntArray:
        result = np.zeros(count, dtype=np.int64)
        np.maximum.at(result, idx, values[members])
        return result

    horizon = max(1, int(fleet.restrict0_q.max(initial=0)))
    left = fleet.restrict0_q[:, None] > np.arange(horizon)[None, :]
    first = np.zeros(count, dtype=np.int64)
    first[idx[::-1]] = np.flatnonzero(members)[::-1]
    return Clusters(
        cluster_of=cluster_of,
        area=[fleet.area[i] for i in first],
        size=size,
        power_kw=mean(fleet.power_kw),
        min_run_q=longest(fleet.min_run_q),
        lockout_q=longest(fleet.lockout_q),
        max_starts_h=fleet.max_starts_h[first],
        on0=total(fleet.on0),
        pre_on=total(left & fleet.on0[:, None]),
        pre_off=total(left & ~fleet.on0[:, None]),
        weight=mean(fleet.availability * fleet.response),
        demand_kw=mean(fleet.demand_kw),
        balance=mean(fleet.balance),
        storage_kwh=mean(fleet.storage_kwh),
        storage0_kwh=mean(np.minimum(fleet.storage0_kwh, fleet.storage_kwh)),
    )


def _relaxed(fleet: Fleet, cluster_of: IntArray, count: int) -> Clusters:
    """The clusters of build_clusters(relaxed=True): every per-site plan is feasible for their model."""
    base = _aggregate(fleet, cluster_of, count)
    members = cluster_of >= 0
    idx = cluster_of[members]

    def extreme(values: npt.NDArray[np.generic], pick: np.ufunc, start: float) -> FloatArray:
        result = np.full((count, *values.shape[1:]), start)
        pick.at(result, idx, values[members])
        return result

    power_share = fleet.power_kw / np.maximum(base.power_kw[np.maximum(cluster_of, 0)], 1e-9)
    horizon = max(1, int(fleet.restrict0_q.max(initial=0)))
    left = (fleet.restrict0_q[:, None] > np.arange(horizon)[None, :]) * power_share[:, None]
    variance = fleet.availability * (1 - fleet.availability) * (fleet.response * fleet.power_kw) ** 2

    def total(values: FloatArray) -> FloatArray:
        result = np.zeros((count, *values.shape[1:]))
        np.add.at(result, idx, values[members])
        return result

    return replace(
        base,
        min_run_q=extreme(fleet.min_run_q, np.minimum, 1e9).astype(np.int64),
        lockout_q=extreme(fleet.lockout_q, np.minimum, 1e9).astype(np.int64),
        max_starts_h=extreme(fleet.max_starts_h, np.maximum, 0).astype(np.int64),
        on0=total(fleet.on0 * power_share),
        pre_on=total(left * fleet.on0[:, None]),
        pre_off=total(left * ~fleet.on0[:, None]),
        weight=extreme(fleet.availability * fleet.response, np.maximum, 0.0),
        balance=extreme(fleet.balance, np.minimum, np.inf),
        variance_per_kw=extreme(variance / np.maximum(fleet.power_kw, 1e-9), np.minimum, np.inf),
        variance_total_kw2={
            area: float(variance[members & (np.array(fleet.area) == area)].sum()) for area in base.area
        },
    )
