"""Settings of the site_sim service."""

from pydantic_settings import SettingsConfigDict

from hybridpool_shared.settings import ServiceSettings


class SiteSimSettings(ServiceSettings):
    """Environment variables prefixed SITE_SIM_; KAFKA_BOOTSTRAP and REDIS_URL are shared."""

    model_config = SettingsConfigDict(env_prefix="SITE_SIM_", env_ignore_empty=True, extra="ignore")
