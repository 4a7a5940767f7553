"""Ops-room rules: site status, fleet aggregates, committed capacity, compliance, paging, audit chain."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from hybridpool_shared.sitestate import SiteLiveState
from services.opsroom.domain import (
    GENESIS_HASH,
    NO_BID_REASON,
    AuditDraft,
    ClearedBid,
    CurvePoint,
    Freshness,
    LiveSite,
    ReactionSample,
    SiteStatus,
    Verdict,
    assess,
    at_risk,
    capacity_revenue_eur,
    chain_record,
    committed_mw,
    delivered_kw,
    histogram,
    hours_without_bid,
    pool_plan,
    reaction_profile,
    search_page,
    site_status,
    summarise,
    verify_audit,
)

NOW = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)
FRESH = Freshness(stale_after_s=60, offline_after_s=300)


def site(
    site_id: str, *, running: bool = True, kw: float = 2.0, age_s: float = 5, **kw_args: object
) -> LiveSite:
    return LiveSite(
        site_id=site_id,
        measured_at=NOW - timedelta(seconds=age_s),
        electric_power_kw=kw if running else 0.0,
        hp_running=running,
        boiler_running=not running,
        **kw_args,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize(
    ("age_s", "gateway", "expected"),
    [
        (5, "ok", SiteStatus.ONLINE),
        (61, "ok", SiteStatus.STALE),
        (301, "ok", SiteStatus.OFFLINE),
        (5, "stale", SiteStatus.STALE),
        (5, "offline", SiteStatus.OFFLINE),
    ],
)
def test_site_status_from_age_and_gateway(age_s: float, gateway: str, expected: SiteStatus) -> None:
    assert site_status(gateway, NOW - timedelta(seconds=age_s), NOW, FRESH) is expected


def test_live_site_reads_the_shared_live_state_json() -> None:
    state = SiteLiveState(
        site_id="villa-1",
        measured_at=NOW,
        electric_power_kw=1.7,
        meter_reading_kwh=10.0,
        hp_running=False,
        boiler_running=True,
        sg_ready_state=1,
        indoor_temp_c=21.0,
        outdoor_temp_c=3.0,
        lockout_ends_at=NOW + timedelta(minutes=10),
        updated_at=NOW,
    )
    parsed = LiveSite.from_json(state.model_dump_json())
    assert parsed.electric_power_kw == 1.7
    assert parsed.lockout_remaining_s(NOW) == 600
    assert not parsed.can_start(NOW)
    assert parsed.can_start(NOW + timedelta(minutes=10))


def test_summary_counts_capacity_only_from_movable_online_sites() -> None:
    sites = [
        site("run-free", kw=2.0),
        site("run-min-run", kw=3.0, min_run_ends_at=NOW + timedelta(minutes=5)),
        site("idle-rested", running=False),
        site("idle-locked", running=False, lockout_ends_at=NOW + timedelta(minutes=5)),
        site("run-excluded", kw=4.0),
        site("run-stale", kw=5.0, age_s=120),
        site("run-offline", kw=6.0, age_s=900),
    ]
    power = {"idle-rested": 1.5, "idle-locked": 2.5}
    out = summarise(sites, power, {"run-excluded"}, NOW, FRESH)
    assert (out.sites_total, out.online, out.stale, out.offline, out.excluded) == (7, 5, 1, 1, 1)
    assert out.hp_running == 4  # the offline site's last word is not trusted
    assert out.on_gas == 2
    assert out.pool_power_kw == pytest.approx(2 + 3 + 4 + 5)
    assert out.up_available_kw == pytest.approx(2.0)  # min-run, excluded and stale sites cannot move
    assert out.down_available_kw == pytest.approx(1.5)  # locked-out HP cannot start
    assert out.unhealthy_share == pytest.approx(2 / 7)


def bid(
    direction: str, mw: float, *, accepted: bool | None = True, hours: tuple[int, int] = (-1, 1)
) -> ClearedBid:
    return ClearedBid(
        bid_id=f"b-{direction}-{mw}",
        direction=direction,
        start=NOW + timedelta(hours=hours[0]),
        end=NOW + timedelta(hours=hours[1]),
        capacity_mw=mw,
        accepted=accepted,
        accepted_mw=mw if accepted else 0.0,
        price_eur_per_mw_per_h=20.0,
        price_eur_per_mwh=None,
    )


def test_committed_capacity_counts_accepted_bids_in_force_symmetric_both_ways() -> None:
    bids = [
        bid("symmetric", 0.3),
        bid("up", 0.5),
        bid("down", 0.2, accepted=False),
        bid("down", 0.4, accepted=None),
        bid("down", 1.0, hours=(1, 2)),
    ]
    assert committed_mw(bids, NOW) == pytest.approx((0.8, 0.3))


def test_capacity_revenue_is_mw_times_price_times_hours() -> None:
    assert capacity_revenue_eur(bid("symmetric", 0.3)) == pytest.approx(0.3 * 20 * 2)
    assert capacity_revenue_eur(bid("up", 0.3, accepted=False)) == 0.0


def ramp(*delivered: float, step_s: float = 1.0, requested: float = 100.0) -> list[CurvePoint]:
    return [CurvePoint(i * step_s, requested, d) for i, d in enumerate(delivered)]


def test_compliance_times_and_verdicts() -> None:
    curve = ramp(0, 30, 60, 96, 100, step_s=60)
    done = assess(curve, "mfrr_energy", 100.0, elapsed_s=300)
    assert (done.t50_s, done.t100_s, done.verdict) == (120.0, 180.0, Verdict.COMPLIANT)

    slow = assess(ramp(0, 10, 20, step_s=400), "mfrr_energy", 100.0, elapsed_s=800)
    assert slow.verdict is Verdict.NON_COMPLIANT
    assert "750" in slow.reason

    running = assess(ramp(0, 10), "mfrr_energy", 100.0, elapsed_s=60)
    assert running.verdict is Verdict.PENDING


def test_fcr_d_needs_half_within_five_seconds() -> None:
    late_half = assess(ramp(0, 10, 20, 30, 40, 45, 100), "fcr_d_up", 100.0, elapsed_s=7)
    assert late_half.verdict is Verdict.NON_COMPLIANT
    assert "50 %" in late_half.reason
    on_time = assess(ramp(0, 20, 40, 50, 70, 90, 100), "fcr_d_up", 100.0, elapsed_s=7)
    assert on_time.verdict is Verdict.COMPLIANT


def test_at_risk_after_half_the_ramp_time_with_less_than_half_delivered() -> None:
    pending = assess(ramp(0, 10), "mfrr_energy", 100.0, elapsed_s=400)
    assert at_risk(pending, 400, 10.0, 100.0)
    early = assess(ramp(0, 10), "mfrr_energy", 100.0, elapsed_s=100)
    assert not at_risk(early, 100, 10.0, 100.0)


def test_delivered_power_sign_follows_direction() -> None:
    assert delivered_kw("up", baseline_kw=150, pool_kw=50) == 100
    assert delivered_kw("down", baseline_kw=50, pool_kw=150) == 100


def test_histogram_bins_every_value() -> None:
    h = histogram([10, 20, 20, 30, float("nan")], bins=2)
    assert h.edges == [10, 20, 30]
    assert h.counts == [1, 3]
    assert histogram([]).counts == []


def test_search_page_filters_sorts_and_clamps() -> None:
    ids = [f"villa-{i:03d}" for i in range(120)]
    labels = {"villa-007": "Nibe F2040 Skolevej 7 DK1"}
    first = search_page(ids, labels, "", page=1, page_size=50)
    assert (first.total, first.pages, first.items[0], len(first.items)) == (120, 3, "villa-000", 50)
    assert search_page(ids, labels, "", page=9, page_size=50).items[-1] == "villa-119"
    assert search_page(ids, labels, "skolevej", 1, 50).items == ["villa-007"]
    assert search_page(ids, labels, "VILLA-11", 1, 50).total == 10
    assert search_page(ids, labels, "nothing", 1, 50).items == []


def test_reaction_profile_median_and_failures() -> None:
    samples = [ReactionSample(4.0, True), ReactionSample(2.0, True), ReactionSample(None, False)]
    profile = reaction_profile(samples)
    assert (profile.commands, profile.failures, profile.median_t50_s) == (3, 1, 3.0)


def test_audit_chain_links_and_detects_tampering() -> None:
    first = chain_record(
        AuditDraft("op-1", "operator", "site.exclude", "allowed", "villa-1"), 0, GENESIS_HASH, NOW
    )
    second = chain_record(
        AuditDraft("op-1", "operator", "site.include", "allowed", "villa-1"), 1, first.hash, NOW
    )
    assert verify_audit([first, second]) is None
    assert verify_audit([first, replace(second, site_id="villa-2")]) == 1
    assert verify_audit([second]) == 1
    injected = chain_record(
        AuditDraft("op\n1", "operator", "x", "allowed", detail="a\rb"), 0, GENESIS_HASH, NOW
    )
    assert "\n" not in injected.actor_id
    assert "\r" not in injected.detail


def test_hours_without_bid_are_merged_into_runs() -> None:
    covered = [(NOW, NOW + timedelta(hours=1)), (NOW + timedelta(hours=3), NOW + timedelta(hours=4))]
    runs = hours_without_bid(covered, NOW + timedelta(minutes=20), NOW + timedelta(hours=6))
    assert [(r["start"][11:16], r["end"][11:16]) for r in runs] == [("13:00", "15:00"), ("16:00", "18:00")]


def test_hours_without_bid_carry_biddings_reasons_and_split_where_they_differ() -> None:
    def period(start_h: int, end_h: int, reason: str) -> dict[str, str]:
        start, end = NOW + timedelta(hours=start_h), NOW + timedelta(hours=end_h)
        return {
            "area": "DK2",
            "product": "fcr_n",
            "start": start.isoformat(),
            "end": end.isoformat(),
            "reason": reason,
        }

    explained = [period(1, 2, "0.12 MW < 0.3 MW"), period(2, 3, "0.12 MW < 0.3 MW"), period(3, 4, "fallback")]
    runs = hours_without_bid([], NOW, NOW + timedelta(hours=5), explained)
    assert [(r["start"][11:16], r["end"][11:16], r["reason"]) for r in runs] == [
        ("12:00", "13:00", NO_BID_REASON),
        ("13:00", "15:00", "DK2 fcr_n: 0.12 MW < 0.3 MW"),
        ("15:00", "16:00", "DK2 fcr_n: fallback"),
        ("16:00", "17:00", NO_BID_REASON),
    ]


def test_pool_plan_sums_site_plans_per_quarter() -> None:
    plans = [
        {"first_quarter_start": NOW.isoformat(), "hp_on": [True, False], "expected_hp_power_kw": [2.0, 0.0]},
        {
            "first_quarter_start": (NOW + timedelta(minutes=15)).isoformat(),
            "hp_on": [True],
            "expected_hp_power_kw": [3.0],
            "fallback": True,
        },
    ]
    plan = pool_plan(plans)
    assert plan.hp_on == [1, 1]
    assert plan.expected_kw == [2.0, 3.0]
    assert (plan.sites, plan.fallback_sites) == (2, 1)
