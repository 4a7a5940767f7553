"""Settings of the market_sim service."""

from hybridpool_shared.settings import ServiceSettings
from pydantic_settings import SettingsConfigDict


class MarketSimSettings(ServiceSettings):
    """Environment variables prefixed MARKET_SIM_; KAFKA_BOOTSTRAP and REDIS_URL are shared."""

    model_config = SettingsConfigDict(env_prefix="MARKET_SIM_", env_ignore_empty=True, extra="ignore")
