"""Settings of the opsroom service."""

from pydantic_settings import SettingsConfigDict

from hybridpool_shared.settings import ServiceSettings


class OpsroomSettings(ServiceSettings):
    """Environment variables prefixed OPSROOM_; KAFKA_BOOTSTRAP and REDIS_URL are shared."""

    model_config = SettingsConfigDict(env_prefix="OPSROOM_", env_ignore_empty=True, extra="ignore")
