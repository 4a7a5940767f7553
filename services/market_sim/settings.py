"""Settings of the market_sim service."""

from pydantic_settings import SettingsConfigDict

from hybridpool_shared.settings import ServiceSettings


class MarketSimSettings(ServiceSettings):
    """Environment variables prefixed MARKET_SIM_; KAFKA_BOOTSTRAP and REDIS_URL are shared."""

    model_config = SettingsConfigDict(env_prefix="MARKET_SIM_", env_ignore_empty=True, extra="ignore")
