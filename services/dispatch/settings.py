"""Settings of the dispatch service."""

from pydantic_settings import SettingsConfigDict

from hybridpool_shared.settings import ServiceSettings


class DispatchSettings(ServiceSettings):
    """Environment variables prefixed DISPATCH_; KAFKA_BOOTSTRAP and REDIS_URL are shared."""

    model_config = SettingsConfigDict(env_prefix="DISPATCH_", env_ignore_empty=True, extra="ignore")
