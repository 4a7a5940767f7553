"""Settings of the telemetry service."""

from pydantic_settings import SettingsConfigDict

from hybridpool_shared.settings import ServiceSettings


class TelemetrySettings(ServiceSettings):
    """Environment variables prefixed TELEMETRY_; KAFKA_BOOTSTRAP and REDIS_URL are shared."""

    model_config = SettingsConfigDict(env_prefix="TELEMETRY_", env_ignore_empty=True, extra="ignore")
