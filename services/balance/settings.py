"""Settings of the balance service."""

from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from hybridpool_shared.settings import ServiceSettings


class BalanceSettings(ServiceSettings):
    """Environment variables prefixed BALANCE_; KAFKA_BOOTSTRAP and REDIS_URL are shared."""

    model_config = SettingsConfigDict(env_prefix="BALANCE_", env_ignore_empty=True, extra="ignore")

    gas_price_eur_per_m3: float = Field(default=0.80, gt=0, description="Gas price incl. taxes.")
    gas_kwh_per_m3: float = Field(default=11.0, gt=0, description="Gross calorific value.")
    electricity_adders_eur_per_mwh: float = Field(
        default=135.0, description="Tariffs, taxes and fees paid on top of spot."
    )
    default_cop: float = Field(
        default=3.0, gt=0, le=10, description="COP when no outdoor temperature is known."
    )
    type_cop_efficiency: float = Field(default=0.36, gt=0, le=0.9, description="Type default: × Lorentz COP.")
    type_curve_base_c: float = Field(default=25.0, ge=15, le=60, description="Type heating curve at 20 °C.")
    type_curve_slope: float = Field(
        default=1.0, gt=0, le=3, description="Type heating curve: K per K colder."
    )
    seasonal_outdoor_c: tuple[float, ...] | None = Field(
        default=None,
        min_length=12,
        max_length=12,
        description="Outdoor °C per month (JSON list of 12) for sites without a recent reading; "
        "unset: the default COP.",
    )
    outdoor_max_age_h: float = Field(default=48.0, gt=0, description="A reading older than this is not used.")
    fit_min_samples: int = Field(
        default=96, ge=10, description="COP samples before a site's own fit is used."
    )
    fit_window_days: float = Field(default=14.0, gt=0, description="COP samples kept for the fit.")
    refit_every_quarters: int = Field(default=16, ge=1, description="Refit cadence in quarters of data.")
    cop_change_threshold: float = Field(
        default=0.05, ge=0, description="COP change that triggers republishing."
    )
    dkk_per_eur: float = Field(default=7.46, gt=0, description="For prices that come in DKK only.")
    publish_past_h: float = Field(
        default=48.0, ge=0, description="Replayed older quarters are stored, not published."
    )
    price_retention_days: float = Field(
        default=14.0, gt=0, description="Spot prices kept for reads and recompute."
    )
    publish_concurrency: int = Field(default=256, ge=1, le=5000)
    tariffs_file: Path | None = Field(
        default=None, description="JSON list of tariff versions loaded at start."
    )
    max_range_days: int = Field(
        default=31, ge=1, le=366, description="Longest range one HTTP read may ask for."
    )
