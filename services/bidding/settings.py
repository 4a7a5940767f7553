"""Settings of the bidding service."""

from typing import Self

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from hybridpool_shared.domain.market_rules import market_min_mw
from hybridpool_shared.messages import ReserveProduct
from hybridpool_shared.settings import ServiceSettings


class BiddingSettings(ServiceSettings):
    """Environment variables prefixed BIDDING_; KAFKA_BOOTSTRAP and REDIS_URL are shared."""

    model_config = SettingsConfigDict(env_prefix="BIDDING_", env_ignore_empty=True, extra="ignore")

    replan_interval_s: float = Field(default=300.0, gt=0, description="How often a plan is considered.")
    startup_delay_s: float = Field(default=20.0, ge=0, description="Wait for inputs before the first plan.")
    intraday: bool = Field(default=True, description="Also re-plan the rest of today each hour.")
    time_limit_s: float = Field(default=20.0, gt=0, description="Solver time limit.")
    improve_budget_s: float = Field(
        default=60.0, ge=0, description="Time for re-planning each site on its own costs after the solve."
    )
    relative_gap: float = Field(default=0.005, gt=0, lt=1)
    z: float = Field(default=2.326, ge=0, description="Margin: bid ≤ μ − z·σ of deliverable MW.")
    default_availability: float = Field(default=0.98, gt=0, le=1, description="Online site, no history.")
    unknown_state_availability: float = Field(default=0.9, gt=0, le=1, description="Site without state.")
    min_bid_fcr_n_mw: float = Field(
        default=0.3, gt=0, description="Smallest FCR-N bid in DK2 (the pool's 0.3 MW; the market takes 0.1)."
    )
    min_bid_fcr_dk1_mw: float = Field(
        default=1.0, gt=0, description="Smallest FCR bid in DK1 (market: 1 MW)."
    )
    min_bid_mfrr_mw: float = Field(default=1.0, gt=0, description="Smallest mFRR energy bid (market: 1 MW).")
    min_bid_fcr_d_mw: float = Field(
        default=0.3, gt=0, description="Smallest FCR-D up or down bid in DK2 (the pool's 0.3; market 0.1)."
    )
    assumed_response_fcr_n: float = Field(
        default=1.0, ge=0, le=1, description="Deliverable share of a site not yet measured, FCR-N (150 s)."
    )
    assumed_response_fcr_dk1: float = Field(
        default=0.0,
        ge=0,
        le=1,
        description="Same for FCR in DK1, full within 30 s; the seed measured ≈ 2 min to switch a HP off.",
    )
    assumed_response_fcr_d: float = Field(
        default=0.0, ge=0, le=1, description="Same for FCR-D in DK2 (50 % in 5 s, 100 % in 30 s)."
    )

    def claim_stale_s(self) -> float:
        """How old a trigger's pending claim must be before another run takes it over (a crashed run's).

        Well above a run's longest: the solve, the energy-only re-solve, the per-site re-plan, the
        sizing solve, and publishing a large fleet's plans.
        """
        return 3 * (self.time_limit_s + self.improve_budget_s) + 300.0

    def assumed_response(self) -> dict[str, float]:
        """The assumed deliverable share of an unmeasured site, by product."""
        return {
            ReserveProduct.FCR_N.value: self.assumed_response_fcr_n,
            ReserveProduct.FCR_DK1.value: self.assumed_response_fcr_dk1,
            ReserveProduct.FCR_D_UP.value: self.assumed_response_fcr_d,
        }

    @model_validator(mode="after")
    def _at_least_the_market_minimum(self) -> Self:
        for product, mw in (
            (ReserveProduct.FCR_N, self.min_bid_fcr_n_mw),
            (ReserveProduct.FCR_DK1, self.min_bid_fcr_dk1_mw),
            (ReserveProduct.MFRR_ENERGY, self.min_bid_mfrr_mw),
            (ReserveProduct.FCR_D_UP, self.min_bid_fcr_d_mw),
        ):
            if mw < market_min_mw(product):
                raise ValueError(
                    f"{product.value} bids below {market_min_mw(product)} MW are refused by the market"
                )
        return self

    default_outdoor_c: float = Field(default=5.0, description="Outdoor mean when no site reports one.")
    default_cop: float = Field(default=3.0, gt=0, le=10)
    gas_price_eur_per_m3: float = Field(default=0.80, gt=0)
    gas_kwh_per_m3: float = Field(default=11.0, gt=0)
    electricity_adders_eur_per_mwh: float = Field(default=135.0)
    default_spot_eur_per_mwh: float = Field(default=90.0, description="Synthetic spot level if none.")
    publish_concurrency: int = Field(default=64, ge=1)
