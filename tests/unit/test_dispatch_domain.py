"""Dispatch domain: unit choice, frequency response, closed-loop bookkeeping and the safety check."""

from __future__ import annotations

import math

import pytest

from hybridpool_shared.messages import Direction, ReserveProduct, SgReadyState
from services.dispatch.domain.controller import ActivationLoop, LoopConfig, Release, Resend, Switch
from services.dispatch.domain.fleet import Fleet, Unit
from services.dispatch.domain.products import ActivationSpec, frequency_share
from services.dispatch.domain.safety import LoggedCommand, rule_violations
from services.dispatch.domain.selection import choose_units

NOW = 1_000_000.0


def _unit(site: str, running: bool, kw: float, price: float = 50.0, since: float = NOW - 3600) -> Unit:
    u = Unit(site, rated_kw=3.0, power_kw=kw if running else 0.0, hp_running=running, measured_s=NOW)
    u.balance_price_eur_per_mwh = price
    if running:
        u.running_since_s, u.on_power_kw = since, kw
    else:
        u.stopped_since_s = since
    return u


def test_up_switches_off_running_hps_cheapest_balance_price_first() -> None:
    units = [_unit("a", True, 2.0, 80), _unit("b", True, 2.0, 20), _unit("c", False, 0.0, 10)]
    sel = choose_units(units, Direction.UP, 2.0, NOW)
    assert [p.site_id for p in sel.picks] == ["b"]
    assert sel.available_kw == 4.0


def test_down_switches_on_rested_idle_hps_with_highest_balance_price_first() -> None:
    units = [_unit("a", False, 0, 80), _unit("b", False, 0, 20), _unit("r", True, 2.0)]
    sel = choose_units(units, Direction.DOWN, 1.0, NOW)
    assert [p.site_id for p in sel.picks] == ["a"]


def test_lockout_and_min_run_exclude_units() -> None:
    just_stopped = _unit("idle", False, 0, since=NOW - 60)  # lock-out 15 min not over
    just_started = _unit("run", True, 2.0, since=NOW - 60)  # min run not over
    assert choose_units([just_stopped], Direction.DOWN, 1.0, NOW).picks == ()
    sel = choose_units([just_started], Direction.UP, 1.0, NOW)
    assert sel.picks == ()
    assert sel.blocked_by_rules == 1


def test_recent_starts_rotate_the_choice() -> None:
    busy, fresh = _unit("busy", False, 0, 60), _unit("fresh", False, 0, 50)
    busy.starts.extend([NOW - 100, NOW - 200])
    assert choose_units([busy, fresh], Direction.DOWN, 1.0, NOW).picks[0].site_id == "fresh"


def test_units_an_operator_excluded_are_never_chosen() -> None:
    fleet = Fleet()
    for site, price in (("cheap", 10.0), ("dear", 90.0)):
        fleet.observe(site, NOW - 3600, 2.0, True)
        fleet.observe(site, NOW, 2.0, True)
        fleet.set_price(site, price)
    fleet.set_in_pool("cheap", False)
    sel = choose_units(fleet.units.values(), Direction.UP, 4.0, NOW)
    assert [p.site_id for p in sel.picks] == ["dear"]
    assert sel.available_kw == 2.0
    fleet.set_in_pool("cheap", True)
    assert choose_units(fleet.units.values(), Direction.UP, 1.0, NOW).picks[0].site_id == "cheap"


def test_an_area_activation_uses_no_unit_known_to_be_in_another_zone() -> None:
    fleet = Fleet()
    for site, area in (("dk1", "DK1"), ("dk2", "DK2"), ("unknown", None)):
        fleet.observe(site, NOW - 3600, 2.0, True)
        fleet.observe(site, NOW, 2.0, True)
        if area:
            fleet.set_master(site, 2.0, 15, 15, area)
    sel = choose_units(fleet.units.values(), Direction.UP, 10.0, NOW, spare_share=0.0, area="DK2")
    assert sorted(p.site_id for p in sel.picks) == ["dk2", "unknown"]
    anywhere = choose_units(fleet.units.values(), Direction.UP, 10.0, NOW, spare_share=0.0)
    assert len(anywhere.picks) == 3


def test_offline_units_are_not_used() -> None:
    stale = _unit("s", True, 2.0)
    stale.measured_s = NOW - 3600
    sel = choose_units([stale], Direction.UP, 1.0, NOW)
    assert sel.picks == ()
    assert sel.offline == 1


def test_fcr_n_share_is_proportional_over_the_band() -> None:
    assert frequency_share(ReserveProduct.FCR_N, Direction.UP, 49.95) == pytest.approx(0.5)
    assert frequency_share(ReserveProduct.FCR_N, Direction.UP, 49.8) == 1.0
    assert frequency_share(ReserveProduct.FCR_N, Direction.UP, 50.05) == 0.0
    assert frequency_share(ReserveProduct.FCR_N, Direction.DOWN, 50.05) == pytest.approx(0.5)
    assert frequency_share(ReserveProduct.FCR_D_UP, Direction.UP, 49.7) == pytest.approx(0.5)


def test_fleet_tracks_starts_and_stops_from_telemetry() -> None:
    fleet = Fleet()
    fleet.set_master("x", 4.0, min_run_min=20, lockout_min=10)
    fleet.observe("x", NOW - 60, 0.0, False)  # first sight: no start counted
    fleet.observe("x", NOW, 2.0, True)
    fleet.observe("x", NOW + 60, 0.0, False)
    u = fleet.units["x"]
    assert u.stopped_since_s == NOW + 60
    assert not u.can_start(NOW + 300)
    assert u.can_start(NOW + 660)
    fleet.observe("x", NOW + 30, 5.0, True)  # out of order: ignored
    assert u.power_kw == 0.0
    assert u.recent_starts(NOW + 60) == 1


def _loop(kw: float = 2.0, follow: bool = False) -> ActivationLoop:
    product = ReserveProduct.FCR_N if follow else ReserveProduct.MFRR_ENERGY
    spec = ActivationSpec("act", product, Direction.UP, kw, NOW, NOW + 900, follow)
    return ActivationLoop(spec, LoopConfig(ack_timeout_s=10, max_resends=2, margin=0.0))


def test_loop_resends_then_replaces_a_silent_unit() -> None:
    units = {s: _unit(s, True, 2.0, p) for s, p in (("a", 10), ("b", 20))}
    loop = _loop()
    (first,) = loop.step(NOW, units)
    assert isinstance(first, Switch)
    assert first.site_id == "a"
    assert first.state is SgReadyState.BLOCK
    loop.on_sent(first, "c1", NOW, 2.0)
    assert loop.step(NOW + 5, units) == []
    assert loop.step(NOW + 11, units) == [Resend("a", "c1")]
    loop.on_resent("a", NOW + 11)
    assert loop.step(NOW + 22, units) == [Resend("a", "c1")]
    loop.on_resent("a", NOW + 22)
    actions = loop.step(NOW + 33, units)
    assert actions == [Switch("b", SgReadyState.BLOCK, 2.0, replaces="a")]
    assert loop.assignments["a"].failed == "no acknowledgement"


def test_loop_replaces_a_unit_that_acks_but_does_not_change_power() -> None:
    units = {s: _unit(s, True, 2.0, p) for s, p in (("a", 10), ("b", 20))}
    loop = _loop()
    (sw,) = loop.step(NOW, units)
    loop.on_sent(sw, "c1", NOW, 2.0)
    loop.on_ack("a", "c1", True, "", NOW + 1)
    units["a"].measured_s = NOW + 60
    assert loop.step(NOW + 60, units) == []
    actions = loop.step(NOW + 91, units)
    assert [a.site_id for a in actions if isinstance(a, Switch)] == ["b"]


def test_loop_releases_only_after_lockout_and_marks_finished() -> None:
    units = {"a": _unit("a", True, 2.0)}
    loop = ActivationLoop(
        ActivationSpec("act", ReserveProduct.MFRR_ENERGY, Direction.UP, 2.0, NOW, NOW + 300),
        LoopConfig(release_stagger_slots=1),
    )
    (sw,) = loop.step(NOW, units)
    loop.on_sent(sw, "c1", NOW, 2.0)
    assert loop.step(NOW + 301, units) == []  # activation over but the HP rests 15 min
    assert loop.planned_rebound(units) == [(NOW + 900, 2.0)]
    assert loop.step(NOW + 900, units) == [Release("a", "c1")]
    loop.on_released("a", NOW + 900)
    loop.step(NOW + 901, units)
    assert loop.finished


def test_frequency_following_target() -> None:
    loop = _loop(kw=100.0, follow=True)
    assert loop.spec.target_kw(NOW + 1, 49.95) == pytest.approx(50.0)
    assert loop.spec.target_kw(NOW + 1, None) == 0.0
    assert loop.spec.target_kw(NOW + 901, 49.0) == 0.0


def test_rule_violations_are_found() -> None:
    log = [
        LoggedCommand("a", 0, SgReadyState.BLOCK, "1"),
        LoggedCommand("a", 300, SgReadyState.NORMAL, "2"),
        LoggedCommand("b", 0, SgReadyState.FORCE_ON, "3"),
        LoggedCommand("b", 1200, SgReadyState.NORMAL, "4"),
    ]
    problems = rule_violations(log, {}, (900.0, 900.0))
    assert len(problems) == 1
    assert problems[0].startswith("a: NORMAL 300 s after BLOCK")


def test_event_clock_follows_telemetry_time_at_speedup_and_never_goes_back() -> None:
    from services.dispatch.domain.clock import EventClock

    mono = [100.0]
    clock = EventClock(20.0, monotonic=lambda: mono[0], wall=lambda: 5.0)
    assert clock.now() == 5.0
    clock.observe(1000.0)
    mono[0] = 101.0
    assert clock.now() == 1020.0
    clock.observe(1010.0)  # late reading: ignored
    assert clock.now() == 1020.0
    clock.observe(1030.0)
    assert clock.now() == 1030.0


def test_long_activation_rotates_blocked_units_before_two_hours() -> None:
    units = {s: _unit(s, True, 2.0, p) for s, p in (("a", 10), ("b", 20))}
    spec = ActivationSpec("long", ReserveProduct.FCR_N, Direction.UP, 2.0, NOW, NOW + 4 * 3600)
    loop = ActivationLoop(spec, LoopConfig(margin=0.0))
    (sw,) = loop.step(NOW, units)
    loop.on_sent(sw, "c1", NOW, 2.0)
    loop.on_ack("a", "c1", True, "", NOW + 1)
    units["a"].power_kw, units["a"].measured_s = 0.0, NOW + 60
    units["b"].measured_s = NOW + 3600
    assert loop.step(NOW + 3600, units) == []
    units["b"].measured_s = NOW + 6900
    actions = loop.step(NOW + 6900, units)
    assert Release("a", "c1") in actions
    assert [a.site_id for a in actions if isinstance(a, Switch)] == ["b"]


def test_tracker_closes_a_given_up_measurement_against_the_level_reached() -> None:
    from datetime import UTC, datetime, timedelta

    from services.dispatch.domain.tracking import ReactionTracker, Tracked

    t0 = datetime(2026, 1, 15, 9, 31, tzinfo=UTC)
    tracker = ReactionTracker(timedelta(seconds=40), timedelta(seconds=6))
    tracker.start(Tracked("c1", "s1", "a1", t0, 0.0, 1.8, (0.0, 0.01, 0.0, 0.01)))
    for t in range(1, 40, 2):  # rises to 4 kW (tau 6 s), far above the 1.8 kW guessed
        tracker.on_reading("s1", t0 + timedelta(seconds=t), 4.0 * (1 - math.exp(-t / 6)))
    assert tracker.finished(t0 + timedelta(seconds=39.5)) == []
    ((tracked, phases),) = tracker.finished(t0 + timedelta(seconds=40))
    assert tracked.command_id == "c1"
    assert phases.reached_90_at is not None
    assert abs((phases.reached_90_at - t0).total_seconds() - 6 * math.log(10)) < 1.0
