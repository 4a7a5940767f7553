"""Settings of the bidding service."""

from pydantic_settings import SettingsConfigDict

from hybridpool_shared.settings import ServiceSettings


class BiddingSettings(ServiceSettings):
    """Environment variables prefixed BIDDING_; KAFKA_BOOTSTRAP and REDIS_URL are shared."""

    model_config = SettingsConfigDict(env_prefix="BIDDING_", env_ignore_empty=True, extra="ignore")
