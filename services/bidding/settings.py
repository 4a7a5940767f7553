"""Settings of the bidding service."""

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from hybridpool_shared.settings import ServiceSettings


class BiddingSettings(ServiceSettings):
    """Environment variables prefixed BIDDING_; KAFKA_BOOTSTRAP and REDIS_URL are shared."""

    model_config = SettingsConfigDict(env_prefix="BIDDING_", env_ignore_empty=True, extra="ignore")

    replan_interval_s: float = Field(default=300.0, gt=0, description="How often a plan is considered.")
    startup_delay_s: float = Field(default=20.0, ge=0, description="Wait for inputs before the first plan.")
    intraday: bool = Field(default=True, description="Also re-plan the rest of today each hour.")
    time_limit_s: float = Field(default=20.0, gt=0, description="Solver time limit.")
    relative_gap: float = Field(default=0.005, gt=0, lt=1)
    z: float = Field(default=2.326, ge=0, description="Margin: bid ≤ μ − z·σ of deliverable MW.")
    default_availability: float = Field(default=0.98, gt=0, le=1, description="Online site, no history.")
    unknown_state_availability: float = Field(default=0.9, gt=0, le=1, description="Site without state.")
    min_bid_fcr_mw: float = Field(default=0.3, gt=0, description="FCR-N DK2 / FCR DK1 minimum bid.")
    min_bid_mfrr_mw: float = Field(default=1.0, gt=0, description="mFRR energy minimum bid.")
    default_outdoor_c: float = Field(default=5.0, description="Outdoor mean when no site reports one.")
    default_cop: float = Field(default=3.0, gt=0, le=10)
    gas_price_eur_per_m3: float = Field(default=0.80, gt=0)
    gas_kwh_per_m3: float = Field(default=11.0, gt=0)
    electricity_adders_eur_per_mwh: float = Field(default=135.0)
    default_spot_eur_per_mwh: float = Field(default=90.0, description="Synthetic spot level if none.")
    publish_concurrency: int = Field(default=64, ge=1)
