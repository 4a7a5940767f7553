"""Market simulator maths: pay-as-cleared clearing, mFRR merit order, seeded activations and frequency."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from hybridpool_shared.messages import BidSubmitted, Direction, ReserveProduct
from services.market_sim import domain
from services.market_sim.domain import MfrrQuarter, Scenario

T0 = datetime(2026, 11, 23, 16, 0, tzinfo=UTC)  # 17:00 Copenhagen
NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def _capacity(price: float, mw: float = 0.5) -> BidSubmitted:
    return BidSubmitted(
        bid_id="b-cap",
        area="DK2",
        product=ReserveProduct.FCR_N,
        direction=Direction.SYMMETRIC,
        capacity_mw=mw,
        price_eur_per_mw_per_h=price,
        interval_start=T0,
        interval_end=T0 + timedelta(hours=1),
        interval_minutes=60,
        submitted_at=NOW,
    )


def _energy(direction: Direction, price: float, mw: float = 1.2) -> BidSubmitted:
    return BidSubmitted(
        bid_id=f"b-{direction}",
        area="DK1",
        product=ReserveProduct.MFRR_ENERGY,
        direction=direction,
        capacity_mw=mw,
        price_eur_per_mwh=price,
        interval_start=T0,
        interval_end=T0 + timedelta(minutes=15),
        interval_minutes=15,
        submitted_at=NOW,
    )


def test_capacity_is_pay_as_cleared() -> None:
    """Accepted in full at the clearing price when the bid asks no more; otherwise rejected."""
    accepted = domain.clear_capacity(_capacity(10.0), 20.0, NOW)
    assert accepted.accepted
    assert accepted.accepted_mw == 0.5
    assert accepted.clearing_price_eur_per_mw_per_h == 20.0
    assert domain.capacity_revenue_eur(_capacity(10.0), accepted) == 10.0  # 20 EUR × 0.5 MW × 1 h
    rejected = domain.clear_capacity(_capacity(25.0), 20.0, NOW)
    assert not rejected.accepted
    assert rejected.accepted_mw == 0.0
    assert domain.capacity_revenue_eur(_capacity(25.0), rejected) == 0.0


def test_energy_bids_clear_in_merit_order() -> None:
    """Up: ask ≤ up price; down: pay ≥ down price."""
    quarter = MfrrQuarter(120.0, 50.0, 80.0, 0.0)
    assert domain.clear_energy(_energy(Direction.UP, 110.0), quarter, NOW).accepted
    assert not domain.clear_energy(_energy(Direction.UP, 130.0), quarter, NOW).accepted
    assert domain.clear_energy(_energy(Direction.DOWN, 60.0), quarter, NOW).accepted
    assert not domain.clear_energy(_energy(Direction.DOWN, 40.0), quarter, NOW).accepted


def test_activation_follows_the_market_volume() -> None:
    """An in-merit bid is activated up to what the TSO activated in its direction; none without volume."""
    quarter = MfrrQuarter(120.0, 50.0, up_mw=0.7, down_mw=0.0)
    up = domain.activation_for(_energy(Direction.UP, 100.0), quarter, NOW)
    assert up is not None
    assert up.power_mw == 0.7
    assert up.direction is Direction.UP
    assert up.area == _energy(Direction.UP, 100.0).area  # delivered by the bid's own zone
    assert domain.activation_for(_energy(Direction.DOWN, 100.0), quarter, NOW) is None
    assert domain.activation_revenue_eur(up, 120.0) == pytest.approx(0.7 * 0.25 * 120.0, abs=0.01)


def test_synthetic_series_are_deterministic_per_seed() -> None:
    """Same seed and time → same prices and frequency; another seed differs."""
    a = domain.synthetic_mfrr(1, T0, Scenario.QUIET)
    assert a == domain.synthetic_mfrr(1, T0, Scenario.QUIET)
    assert a != domain.synthetic_mfrr(2, T0, Scenario.QUIET)
    assert domain.frequency_hz(1, "DK2", T0, Scenario.QUIET) == domain.frequency_hz(
        1, "DK2", T0, Scenario.QUIET
    )


def test_long_up_activation_scenario_activates_every_evening_quarter() -> None:
    """17:00–19:00 Copenhagen: large up volume in every quarter."""
    for q in range(8):
        quarter = domain.synthetic_mfrr(5, T0 + timedelta(minutes=15 * q), Scenario.LONG_UP_ACTIVATION)
        assert quarter.up_mw >= 100.0


def test_big_frequency_drop_goes_below_fcr_d_activation() -> None:
    """Minute 10 of every hour the frequency falls below 49.6 Hz and then recovers."""
    drop_at = T0 + timedelta(minutes=10, seconds=5)
    assert domain.frequency_hz(3, "DK2", drop_at, Scenario.BIG_FREQUENCY_DROP) < 49.6
    assert domain.frequency_hz(3, "DK2", drop_at, Scenario.QUIET) > 49.9
    later = drop_at + timedelta(minutes=10)
    assert domain.frequency_hz(3, "DK2", later, Scenario.BIG_FREQUENCY_DROP) > 49.9


def test_quiet_frequency_stays_near_nominal() -> None:
    """A quiet hour stays within ±0.1 Hz almost always (rare events aside)."""
    samples = [
        domain.frequency_hz(9, "DK1", T0 + timedelta(seconds=s), Scenario.QUIET) for s in range(0, 3600, 7)
    ]
    inside = sum(1 for f in samples if abs(f - 50.0) < 0.1)
    assert inside / len(samples) > 0.95


def test_replayed_eds_record_is_read() -> None:
    """An MfrrEnergyActivationMarket record gives prices and volumes; nulls count as 0 MW."""
    record = {
        "TimeUTC": "2026-09-15T21:45:00",
        "PriceArea": "DK2",
        "mFRRSAUpEUR": 254.17,
        "mFRRSADownEUR": 171.0,
        "TotalmFRRUpMW": 76,
        "TotalmFRRDownMW": None,
        "mFRROfferedUpMW": 381,
        "mFRROfferedDownMW": 501,
    }
    quarter = domain.replayed_mfrr(record)
    assert quarter.up_price_eur_per_mwh == 254.17
    assert quarter.up_mw == 76.0
    assert quarter.down_mw == 0.0


def test_replayed_frequency_loops_over_the_trace(tmp_path: Path) -> None:
    """A recorded trace is read (comments ignored, nonsense refused) and indexed by second of the day."""
    from services.market_sim.adapters import load_frequency

    trace_file = tmp_path / "trace.txt"
    trace_file.write_text("# DK2 2026-01-01\n50.01\n49.98\n\n50.00\n")
    trace = load_frequency(trace_file)
    assert trace == [50.01, 49.98, 50.0]
    midnight = datetime(2026, 11, 22, 0, 0, tzinfo=UTC)
    assert domain.replayed_frequency_hz(trace, midnight + timedelta(seconds=1)) == 49.98
    assert domain.replayed_frequency_hz(trace, midnight + timedelta(seconds=4)) == 49.98
    (tmp_path / "bad.txt").write_text("5000\n")
    with pytest.raises(ValueError, match="not a grid frequency"):
        load_frequency(tmp_path / "bad.txt")
