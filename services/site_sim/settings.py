"""Settings of the site_sim service."""

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from hybridpool_shared.settings import ServiceSettings


class SiteSimSettings(ServiceSettings):
    """Environment variables prefixed SITE_SIM_; KAFKA_BOOTSTRAP and REDIS_URL are shared."""

    model_config = SettingsConfigDict(env_prefix="SITE_SIM_", env_ignore_empty=True, extra="ignore")

    sites: int = Field(default=2200, ge=0, le=1_000_000, description="Simulated villas.")
    buildings: int = Field(default=0, ge=0, le=100_000, description="Larger buildings (school-like).")
    seed: int = Field(default=42, description="Seed of the fleet's master data and physics.")
    site_prefix: str = Field(default="sim-villa", pattern=r"^[A-Za-z0-9._:-]{1,40}$")
    telemetry_interval_s: float = Field(default=60.0, ge=1.0, le=3600.0)
    physics_step_s: float = Field(default=10.0, gt=0.0, le=60.0, description="Simulated seconds per step.")
    speedup: float = Field(default=1.0, gt=0.0, le=3600.0, description="Simulated seconds per real second.")
    start_offset_h: float = Field(
        default=0.0, ge=0.0, le=24.0 * 366, description="Start the simulated clock this long before now."
    )
    publish_chunk: int = Field(default=2000, ge=1, le=10_000, description="Readings sent concurrently.")
    register_fleet: bool = Field(default=True, description="Register the fleet via the registry's import.")
    registry_url: str | None = Field(default=None, description="Unset: the registry `hybridpool up` runs.")
    registry_client_id: str = Field(default="dev-installer", description="The installer principal.")
    registry_client_secret: SecretStr | None = Field(
        default=None, description="Unset: read from the registry's local-development principals file."
    )
    owner_id: str = Field(
        default="dev-owner", max_length=64, description="The homes' owner in the registry ('' for none)."
    )
    owner_secret: SecretStr | None = Field(
        default=None, description="Unset: read from the registry's local-development principals file."
    )
    consent_operator_id: str = Field(
        default="dev-operator",
        max_length=64,
        description="The operator the owner lets see the homes' data ('' for nobody).",
    )
    consent_share: float = Field(
        default=0.9, ge=0.0, le=1.0, description="Share of homes whose owner consents; the rest stay private."
    )
    consent_purpose: str = Field(default="operations", pattern=r"^[a-z][a-z0-9_.-]{1,39}$")
    consent_days: float = Field(default=365.0, gt=0.0, le=3650.0, description="How long a consent lasts.")
