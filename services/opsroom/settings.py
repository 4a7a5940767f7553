"""Settings of the opsroom service."""

from pydantic import AliasChoices, Field
from pydantic_settings import SettingsConfigDict

from hybridpool_shared.settings import ServiceSettings


class OpsroomSettings(ServiceSettings):
    """Environment variables prefixed OPSROOM_; KAFKA_BOOTSTRAP and REDIS_URL are shared."""

    model_config = SettingsConfigDict(env_prefix="OPSROOM_", env_ignore_empty=True, extra="ignore")

    registry_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("OPSROOM_REGISTRY_URL", "REGISTRY_URL"),
        description="Base URL of the registry API; unset: the registry `hybridpool up` started.",
    )
    bidding_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("OPSROOM_BIDDING_URL", "BIDDING_URL"),
        description="Base URL of the bidding API (plan status); unset: the one `hybridpool up` started.",
    )
    dispatch_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("OPSROOM_DISPATCH_URL", "DISPATCH_URL"),
        description="Base URL of the dispatch API (activation reports); unset: `hybridpool up`'s dispatch.",
    )
    purpose: str = Field(
        default="operations",
        pattern=r"^[a-z][a-z0-9_.-]{1,39}$",
        description="Consent purpose the ops room asks the registry for when it shows a site.",
    )
    tick_s: float = Field(default=1.0, gt=0.05, le=10, description="Live aggregation period.")
    stale_after_s: float = Field(default=180.0, gt=0, description="Site data older than this: stale.")
    offline_after_s: float = Field(default=900.0, gt=0, description="Site data older than this: offline.")
    stale_alarm_share: float = Field(default=0.1, ge=0, le=1, description="Stale+offline share that alarms.")
    session_ttl_s: int = Field(default=8 * 3600, ge=60, description="Upper bound of a login session.")
    visible_cache_s: float = Field(default=10.0, ge=0, description="How long a consent lookup is reused.")
    telemetry_quarters_kept: int = Field(default=192, ge=4, description="Quarter aggregates kept per site.")
    cookie_secure: bool = Field(default=False, description="Send the session cookie over HTTPS only.")
