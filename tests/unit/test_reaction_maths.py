"""Reaction phases from telemetry, per-site profiles and the activation compliance verdict."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest

from hybridpool_shared.domain.reaction import (
    ActivationFacts,
    CurvePoint,
    PowerSample,
    ReactionPhases,
    ReactionProfile,
    ReactionRecord,
    activation_report,
    build_profile,
    measure_reaction,
    noise_kw,
    percentile,
    profile_key,
)

T0 = datetime(2026, 1, 15, 9, 31, tzinfo=UTC)


def _series(fn, minutes: float = 20, step_s: float = 30) -> list[PowerSample]:  # type: ignore[no-untyped-def]
    n = int(minutes * 60 / step_s)
    return [PowerSample(T0 + timedelta(seconds=i * step_s), fn(i * step_s)) for i in range(n + 1)]


def test_switch_off_reaches_zero_within_two_minutes_like_the_seed() -> None:
    # HP draws 3 kW, reacts at once and draws nothing after ~2 min (seed doc 004, Fig. 6).
    samples = _series(lambda t: 3.0 if t <= 0 else max(0.0, 3.0 * (1 - t / 120)))
    r = measure_reaction(T0, 3.0, -3.0, samples, site_noise_kw=0.02)
    # crossings interpolated between readings: 2 % (noise-level) change, 50 %, 90 %, within 5 %
    assert r.first_change_at == T0 + timedelta(seconds=2.4)
    assert r.reached_50_at == T0 + timedelta(seconds=60)
    assert r.reached_90_at == T0 + timedelta(seconds=108)
    assert r.stable_at == T0 + timedelta(seconds=114)
    assert r.responded
    assert r.complete
    assert r.observed_change_kw == pytest.approx(-3.0)


def test_switch_on_half_after_four_minutes_stable_after_thirteen() -> None:
    tau = 240 / math.log(2)
    samples = _series(lambda t: 0.0 if t <= 0 else 2.0 * (1 - math.exp(-t / tau)), minutes=25)
    r = measure_reaction(T0, 0.0, 2.0, samples, site_noise_kw=0.02, give_up_after=timedelta(minutes=25))
    assert r.reached_50_at == T0 + timedelta(seconds=240)
    assert r.reached_90_at is not None
    assert timedelta(minutes=10) < r.reached_90_at - T0 < timedelta(minutes=14)
    assert r.stable_at is not None
    assert r.stable_at > r.reached_50_at


def test_noise_does_not_count_as_a_reaction() -> None:
    samples = _series(lambda t: 2.0 + (0.05 if int(t) % 60 else -0.05))
    r = measure_reaction(T0, 2.0, -2.0, samples, site_noise_kw=noise_kw([s.power_kw for s in samples]))
    assert not r.responded
    assert r.reached_50_at is None
    assert r.complete  # 20 minutes without reaction: give up


def test_incomplete_until_stable_window_seen() -> None:
    samples = _series(lambda t: 3.0 if t <= 0 else 0.0, minutes=1)
    r = measure_reaction(T0, 3.0, -3.0, samples, site_noise_kw=0.02)
    assert r.responded
    assert r.stable_at is None
    assert not r.complete


def test_noise_estimate_ignores_a_step() -> None:
    values = [2.0, 2.01, 1.99, 2.0, 0.0, 0.01, -0.01, 0.0]
    assert noise_kw(values) < 0.05


def test_profile_median_p90_and_never_share() -> None:
    recs = [ReactionRecord(1.0, 30.0, float(60 + i), 120.0, 150.0, True) for i in range(9)]
    recs.append(ReactionRecord(None, None, None, None, None, False))
    p = build_profile("s1", recs, T0)
    assert p.never_responded_share == pytest.approx(0.1)
    assert p.reached_50_s.median_s == 64.0
    assert p.reached_50_s.p90_s == pytest.approx(percentile([60.0 + i for i in range(9)], 0.9))
    assert ReactionProfile.from_redis({k.encode(): v.encode() for k, v in p.to_redis().items()}) == p
    assert profile_key("s1") == "dispatch:reaction_profile:s1"


def _facts(product: str, kw: float = 1000.0, minutes: float = 15) -> ActivationFacts:
    return ActivationFacts("a1", product, "up", kw, T0, T0 + timedelta(minutes=minutes))


def _ramp(full_after_s: float, kw: float = 1000.0, minutes: float = 15) -> list[CurvePoint]:
    return [
        CurvePoint(T0 + timedelta(seconds=t), kw * min(1.0, t / full_after_s), kw)
        for t in range(0, int(minutes * 60), 5)
    ]


def test_mfrr_passes_when_full_within_twelve_and_a_half_minutes() -> None:
    rep = activation_report(_facts("mfrr_energy"), _ramp(300))
    assert rep.compliant
    assert rep.verdict == "passed"
    assert rep.time_to_50_s == 150
    assert rep.time_to_100_s == pytest.approx(295, abs=5)
    assert 0.8 < rep.delivered_share < 1.0


def test_mfrr_fails_when_late_and_says_which_rule() -> None:
    rep = activation_report(_facts("mfrr_energy"), _ramp(800))
    assert not rep.compliant
    assert any("750 s" in r for r in rep.reasons)
    assert [c.met for c in rep.checkpoints] == [False, True]  # 15 min rule of today still met


def test_fcr_n_checks_63_percent_in_60_s_and_full_in_150_and_180() -> None:
    ok = activation_report(_facts("fcr_n", minutes=5), _ramp(90, minutes=5))
    assert ok.compliant
    slow = activation_report(_facts("fcr_n", minutes=5), _ramp(170, minutes=5))
    assert [c.met for c in slow.checkpoints] == [False, True, False]
    assert not slow.compliant


def test_shortfall_reason_is_reported_first() -> None:
    facts = ActivationFacts(
        "a1", "mfrr_energy", "up", 1000, T0, T0 + timedelta(minutes=15), shortfall_reason="x"
    )
    rep = activation_report(facts, _ramp(10_000))
    assert rep.reasons[0] == "x"
    assert not rep.compliant
    assert rep.curve_csv().splitlines()[0] == "at_utc,seconds_since_start,delivered_kw,requested_kw"


def _settles_late(end_s: float, kw: float = 4.0, tau_s: float = 6.0) -> list[PowerSample]:
    """A HP switched on that rises first-order to kw; readings every 2 s."""
    return [
        PowerSample(T0 + timedelta(seconds=t), kw * (1 - math.exp(-t / tau_s)))
        for t in [1.0 + 2 * i for i in range(int((end_s - 1) / 2) + 1)]
    ]


def test_closing_measurement_takes_the_level_reached_when_the_expected_change_was_a_guess() -> None:
    # expected 1.8 kW (a guess), the HP settles at 4 kW only ~24 s in: no 3-window plateau by the 40 s give-up
    samples = _settles_late(39.0)

    def measure(final: bool) -> ReactionPhases:
        return measure_reaction(
            T0,
            0.0,
            1.8,
            samples,
            site_noise_kw=0.01,
            stable_window=timedelta(seconds=6),
            give_up_after=timedelta(seconds=40),
            final=final,
        )

    assert not measure(False).complete  # a later plateau would still correct the reference
    closing = measure(True)
    assert closing.reached_50_at is not None
    assert closing.reached_90_at is not None
    assert abs((closing.reached_50_at - T0).total_seconds() - 6 * math.log(2)) < 0.5
    assert abs((closing.reached_90_at - T0).total_seconds() - 6 * math.log(10)) < 1.0
    assert closing.stable_at is not None


def test_closing_measurement_keeps_the_expected_change_while_power_still_moves() -> None:
    # a slow ramp still under way at the end is no evidence of where the change ends
    samples = [PowerSample(T0 + timedelta(seconds=t), 0.05 * t) for t in range(2, 40, 2)]
    r = measure_reaction(
        T0,
        0.0,
        3.0,
        samples,
        site_noise_kw=0.01,
        stable_window=timedelta(seconds=6),
        give_up_after=timedelta(seconds=40),
        final=True,
    )
    assert r.reached_50_at == T0 + timedelta(seconds=30)
    assert r.reached_90_at is None
