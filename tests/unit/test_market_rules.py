"""The market's product rules: what market_sim refuses and what bidding may not be configured below."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from hybridpool_shared.domain.market_rules import bid_violations
from hybridpool_shared.messages import BidSubmitted, Direction, ReserveProduct
from services.bidding.settings import BiddingSettings
from services.market_sim.domain import refuse

# 2026-01-15 is winter time: Copenhagen = UTC+1, so 23:00 UTC is 00:00 local.
LOCAL_MIDNIGHT = datetime(2026, 1, 14, 23, 0, tzinfo=UTC)
NOW = LOCAL_MIDNIGHT - timedelta(days=1)


def _bid(product: ReserveProduct, area: str, mw: float, minutes: int, **kw: object) -> BidSubmitted:
    start = kw.pop("start", LOCAL_MIDNIGHT)
    assert isinstance(start, datetime)
    fields: dict[str, object] = {
        "bid_id": f"b-{product.value}-{area}-{mw}-{minutes}",
        "area": area,
        "product": product,
        "direction": kw.pop("direction", Direction.SYMMETRIC),
        "capacity_mw": mw,
        "interval_start": start,
        "interval_end": start + timedelta(minutes=minutes),
        "interval_minutes": minutes,
        "submitted_at": NOW,
    }
    if product is ReserveProduct.MFRR_ENERGY:
        fields["price_eur_per_mwh"] = 100.0
    else:
        fields["price_eur_per_mw_per_h"] = 10.0
    return BidSubmitted.model_validate(fields | kw)


def test_valid_bids_of_each_reserve_product_break_no_rule() -> None:
    assert bid_violations(_bid(ReserveProduct.FCR_DK1, "DK1", 1.0, 240)) == []
    assert bid_violations(_bid(ReserveProduct.FCR_N, "DK2", 0.3, 60)) == []
    assert bid_violations(_bid(ReserveProduct.FCR_D_UP, "DK2", 0.1, 60, direction=Direction.UP)) == []
    assert bid_violations(_bid(ReserveProduct.MFRR_ENERGY, "DK1", 1.0, 15, direction=Direction.DOWN)) == []


@pytest.mark.parametrize(
    ("bid", "broken"),
    [
        (_bid(ReserveProduct.FCR_DK1, "DK1", 0.8, 240), "below the fcr_dk1 minimum of 1.0 MW"),
        (_bid(ReserveProduct.FCR_DK1, "DK1", 1.0, 60), "periods are 240 min, not 60"),
        (
            _bid(ReserveProduct.FCR_DK1, "DK1", 1.0, 240, start=LOCAL_MIDNIGHT + timedelta(hours=2)),
            "start at whole 4 h local time",
        ),
        (_bid(ReserveProduct.FCR_N, "DK1", 0.3, 60), "fcr_n is not bought in DK1"),
        (_bid(ReserveProduct.FCR_D_UP, "DK2", 0.3, 60), "fcr_d_up is not bid symmetric"),
        (_bid(ReserveProduct.MFRR_ENERGY, "DK2", 0.5, 15, direction=Direction.UP), "minimum of 1.0 MW"),
    ],
)
def test_each_broken_rule_is_named(bid: BidSubmitted, broken: str) -> None:
    assert any(broken in v for v in bid_violations(bid)), bid_violations(bid)


def test_market_sim_refuses_a_bid_that_breaks_a_rule_and_passes_a_valid_one() -> None:
    refused = refuse(_bid(ReserveProduct.FCR_DK1, "DK1", 0.8, 240), NOW)
    assert refused is not None
    assert (refused.accepted, refused.accepted_mw) == (False, 0.0)
    assert "minimum of 1.0 MW" in refused.refused_because
    assert refuse(_bid(ReserveProduct.FCR_N, "DK2", 0.3, 60), NOW) is None


def test_bidding_cannot_be_set_below_what_the_market_takes() -> None:
    assert BiddingSettings(min_bid_fcr_n_mw=0.1).min_bid_fcr_n_mw == 0.1
    with pytest.raises(ValidationError, match=r"fcr_dk1 bids below 1\.0 MW"):
        BiddingSettings(min_bid_fcr_dk1_mw=0.5)
    with pytest.raises(ValidationError, match=r"fcr_n bids below 0\.1 MW"):
        BiddingSettings(min_bid_fcr_n_mw=0.05)
