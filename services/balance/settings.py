"""Settings of the balance service."""

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
    default_cop: float = Field(default=3.0, gt=0, le=10, description="COP before a site fit.")
