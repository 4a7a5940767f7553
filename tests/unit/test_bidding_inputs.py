"""From topics and live state to planner inputs, and from plans to messages (no I/O)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from hybridpool_shared.messages import (
    BalancePriceComputed,
    BidSubmitted,
    ControlOption,
    DayAheadPriceIngested,
    ReservePriceIngested,
    SiteLocation,
    SiteMasterDataChanged,
)
from hybridpool_shared.sitestate import GatewayStatus, SiteLiveState
from services.bidding.adapters import Book, product_name
from services.bidding.app import (
    DAY_AHEAD,
    INTRADAY,
    bid_messages,
    periods_without_bid,
    plan_messages,
    trigger_id,
    window,
)
from services.bidding.assemble import assemble
from services.bidding.domain.inputs import Options
from services.bidding.domain.planner import max_symmetric_plan
from services.bidding.settings import BiddingSettings

NOW = datetime(2026, 11, 22, 10, 7, tzinfo=UTC)
FIRST = datetime(2026, 11, 22, 23, 0, tzinfo=UTC)
SETTINGS = BiddingSettings(kafka_bootstrap="unused:9092", redis_url="redis://unused")


def _master(site_id: str, area: str = "DK2") -> SiteMasterDataChanged:
    return SiteMasterDataChanged(
        site_id=site_id,
        changed_at=NOW,
        location=SiteLocation(latitude_deg=55.7, longitude_deg=12.5, price_area=area),
        hp_heat_power_kw=12.0,
        hp_electric_power_kw=4.0,
        min_run_minutes=20,
        lockout_minutes=30,
        control_options=(ControlOption.SG_READY,),
    )


def _state(site_id: str, running: bool, status: GatewayStatus = GatewayStatus.OK) -> SiteLiveState:
    return SiteLiveState(
        site_id=site_id,
        measured_at=NOW,
        electric_power_kw=4.0 if running else 0.0,
        meter_reading_kwh=1.0,
        hp_running=running,
        boiler_running=not running,
        sg_ready_state=2,
        indoor_temp_c=22.0,
        outdoor_temp_c=4.0,
        min_run_ends_at=NOW + timedelta(minutes=12) if running else None,
        lockout_ends_at=None if running else NOW + timedelta(minutes=25),
        gateway_status=status,
        updated_at=NOW,
    )


def test_windows_are_tomorrow_or_the_rest_of_today() -> None:
    """Day-ahead: the next Copenhagen day (96 quarters); intraday: from the next quarter to midnight."""
    first, quarters = window(DAY_AHEAD, NOW)
    assert first == FIRST
    assert quarters == 96
    first, quarters = window(INTRADAY, NOW)
    assert first == datetime(2026, 11, 22, 10, 15, tzinfo=UTC)
    assert first + quarters * timedelta(minutes=15) == FIRST


def test_live_state_sets_restrictions_and_online() -> None:
    """Minimum run / lock-out left in whole quarters from the live state; offline gateways are offline."""
    masters = {"a": _master("a"), "b": _master("b"), "c": _master("c")}
    states = {"a": _state("a", True), "b": _state("b", False), "c": _state("c", True, GatewayStatus.OFFLINE)}
    first, quarters = window(INTRADAY, NOW)
    built = assemble(masters, states, {"b": 0.5}, Book(), SETTINGS, first, quarters)
    assert built is not None
    fleet = built.fleet
    assert list(fleet.on0) == [True, False, True]
    assert list(fleet.restrict0_q) == [1, 2, 1]  # 12 − 8 min left → 1 quarter; 25 − 8 → 2
    assert list(fleet.min_run_q) == [2, 2, 2]  # 20 minutes → 2 quarters
    assert list(fleet.lockout_q) == [2, 2, 2]
    assert list(fleet.online) == [True, True, False]
    assert fleet.response[1] == 0.5


def test_sites_without_master_data_get_defaults_and_prices_fall_back() -> None:
    """A live state alone is enough to plan; missing prices are filled synthetically and say so."""
    built = assemble({}, {"x": _state("x", False)}, {}, Book(), SETTINGS, FIRST, 96)
    assert built is not None
    assert built.fleet.site_ids == ["x"]
    assert built.sources["sites"] == "live_state_defaults"
    assert built.sources["spot:DK1"] == "partly_synthetic"
    assert assemble({}, {}, {}, Book(), SETTINGS, FIRST, 96) is None


def test_book_uses_topic_prices() -> None:
    """Spot (hourly expanded to quarters), balance per site and reserve auction prices are used."""
    book = Book()
    for h in range(24):
        start = FIRST + timedelta(hours=h)
        book.add_spot(
            DayAheadPriceIngested(
                area="DK2",
                interval_start=start,
                interval_end=start + timedelta(hours=1),
                interval_minutes=60,
                price_eur_per_mwh=50.0 + h,
                source="test",
                ingested_at=NOW,
            )
        )
        book.add_reserve(
            ReservePriceIngested(
                area="DK2",
                product="FCR-N",
                interval_start=start - timedelta(days=1),
                interval_end=start - timedelta(days=1) + timedelta(hours=1),
                interval_minutes=60,
                price_eur_per_mw_per_h=33.0,
                source="test",
                ingested_at=NOW,
            )
        )
    book.add_balance(
        BalancePriceComputed(
            site_id="a",
            area="DK2",
            interval_start=FIRST,
            interval_end=FIRST + timedelta(minutes=15),
            interval_minutes=15,
            cop=3.3,
            balance_price_eur_per_mwh=77.0,
        )
    )
    built = assemble({"a": _master("a")}, {}, {}, book, SETTINGS, FIRST, 96)
    assert built is not None
    assert built.market.spot["DK2"][5] == 51.0  # quarter 5 is in hour 1
    assert built.sources["spot:DK2"] == "day_ahead"
    assert built.market.reserve_eur_per_mw_h["DK2"][10] == 33.0  # yesterday's auction as forecast
    assert built.sources["reserve:DK2"] == "auctions"
    assert built.fleet.balance[0, 0] == 77.0
    assert product_name("FCR-D ned") == "fcr_d_down"


def test_messages_from_a_plan_are_valid_and_idempotent() -> None:
    """One plan message per site, bids in 0.1 MW steps over whole periods, ids stable per trigger."""
    masters = {f"s{i:03d}": _master(f"s{i:03d}") for i in range(300)}
    states = {k: _state(k, i % 2 == 0) for i, k in enumerate(masters)}
    built = assemble(masters, states, {}, Book(), SETTINGS, FIRST, 96)
    assert built is not None
    trigger = trigger_id(DAY_AHEAD, FIRST, built)
    assert trigger == trigger_id(DAY_AHEAD, FIRST, built)
    assert trigger.startswith("da-2026-11-23-")
    outcome = max_symmetric_plan(built.fleet, built.market, Options(time_limit_s=10))
    plans = plan_messages(built, outcome)
    assert len(plans) == 300
    assert all(len(p.hp_on) == 96 for p in plans)
    bids = bid_messages(DAY_AHEAD, built, outcome, NOW)
    capacity = [b for b in bids if b.price_eur_per_mw_per_h is not None]
    assert capacity
    assert all(b.interval_minutes == 60 and b.capacity_mw >= 0.3 for b in capacity)
    assert len({b.bid_id for b in bids}) == len(bids)
    assert [b.bid_id for b in bids] == [b.bid_id for b in bid_messages(DAY_AHEAD, built, outcome, NOW)]
    assert not [b for b in bid_messages(INTRADAY, built, outcome, NOW) if b.price_eur_per_mw_per_h]
    missing = periods_without_bid(built, outcome)
    assert len(missing) + len(capacity) == 24
    assert all(row["symmetric_mw"] < 0.3 and "minimum" in row["reason"] for row in missing)
    assert all(
        datetime.fromisoformat(row["end"]) - datetime.fromisoformat(row["start"]) == timedelta(hours=1)
        for row in missing
    )
    with pytest.raises(ValueError, match=r"0\.1 MW"):
        BidSubmitted.model_validate({**capacity[0].model_dump(), "capacity_mw": 0.35})


def test_dk1_periods_without_a_fast_enough_site_say_so() -> None:
    """DK1 FCR wants 100 % within 30 s: with every site's share 0, each 4-h block names that as the why."""
    masters = {f"d{i:03d}": _master(f"d{i:03d}", "DK1") for i in range(300)}
    states = {k: _state(k, i % 2 == 0) for i, k in enumerate(masters)}
    built = assemble(masters, states, dict.fromkeys(masters, 0.0), Book(), SETTINGS, FIRST, 96)
    assert built is not None
    outcome = max_symmetric_plan(built.fleet, built.market, Options(time_limit_s=10))
    assert outcome.capacity_bids == []
    missing = periods_without_bid(built, outcome)
    assert len(missing) == 6
    assert all("within 30 s" in row["reason"] and row["product"] == "fcr_dk1" for row in missing)


def test_product_periods_on_a_dst_day() -> None:
    """Autumn DST day (100 quarters): whole hours and 4-hour blocks only; the doubled hour is not bid."""
    from datetime import date

    from hybridpool_shared.timeutil import local_day_bounds
    from services.bidding.domain.inputs import Market, periods
    from services.bidding.domain.synthetic import synthetic_market

    start, end = local_day_bounds(date(2026, 10, 25))
    quarters = int((end - start) / timedelta(minutes=15))
    assert quarters == 100
    market: Market = synthetic_market(start, quarters)
    hourly = periods(market, "DK2")
    blocks = periods(market, "DK1")
    assert len(hourly) == 23
    assert all(p.last - p.first == 4 for p in hourly)
    assert len(blocks) == 5
    assert all(p.last - p.first == 16 for p in blocks)


def test_book_forgets_old_quarters_but_keeps_a_week_of_auctions() -> None:
    """Pruning drops spot and balance prices before the cut; reserve prices stay a week for forecasts."""
    book = Book()
    old = FIRST - timedelta(days=3)
    book.spot["DK1"][int(old.timestamp())] = 1.0
    book.spot["DK1"][int(FIRST.timestamp())] = 2.0
    book.reserve[("DK1", "fcr_dk1")][int(old.timestamp())] = 3.0
    book.prune(FIRST - timedelta(days=1))
    assert book.spot_at("DK1", old) is None
    assert book.spot_at("DK1", FIRST) == 2.0
    assert book.reserve_forecast("DK1", "fcr_dk1", FIRST) == 3.0


def test_dispatch_reaction_profile_derates_slow_and_silent_sites() -> None:
    """All responding within 150 s: 1; a fifth silent: 0.8; twice too slow to 90 %: half; no 90 %: 0."""
    from hybridpool_shared.domain.reaction import PhaseStats, ReactionProfile
    from services.bidding.adapters import profile_response

    def profile(never: float, p90_s: float | None) -> ReactionProfile:
        stats = PhaseStats(median_s=p90_s, p90_s=p90_s, count=10)
        return ReactionProfile(
            site_id="s",
            samples=10,
            never_responded_share=never,
            ack_s=stats,
            first_change_s=stats,
            reached_50_s=stats,
            reached_90_s=stats,
            stable_s=stats,
            updated_at=NOW,
        )

    assert profile_response(profile(0.0, 120.0)) == 1.0
    assert profile_response(profile(0.2, 120.0)) == 0.8
    assert profile_response(profile(0.0, 300.0)) == 0.5
    assert profile_response(profile(0.0, None)) == 0.0
