"""Settings of the price_ingest service."""

from pydantic_settings import SettingsConfigDict

from hybridpool_shared.settings import ServiceSettings


class PriceIngestSettings(ServiceSettings):
    """Environment variables prefixed PRICE_INGEST_; KAFKA_BOOTSTRAP and REDIS_URL are shared."""

    model_config = SettingsConfigDict(env_prefix="PRICE_INGEST_", env_ignore_empty=True, extra="ignore")
