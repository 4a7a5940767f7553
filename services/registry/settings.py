"""Settings of the registry service."""

from pydantic_settings import SettingsConfigDict

from hybridpool_shared.settings import ServiceSettings


class RegistrySettings(ServiceSettings):
    """Environment variables prefixed REGISTRY_; KAFKA_BOOTSTRAP and REDIS_URL are shared."""

    model_config = SettingsConfigDict(env_prefix="REGISTRY_", env_ignore_empty=True, extra="ignore")
