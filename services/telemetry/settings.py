"""Settings of the telemetry service."""

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from hybridpool_shared.settings import ServiceSettings


class TelemetrySettings(ServiceSettings):
    """Environment variables prefixed TELEMETRY_; KAFKA_BOOTSTRAP and REDIS_URL are shared."""

    model_config = SettingsConfigDict(env_prefix="TELEMETRY_", env_ignore_empty=True, extra="ignore")

    batch_max_records: int = Field(default=4000, ge=1, le=100_000, description="Readings per handler call.")
    max_future_s: float = Field(default=30.0, ge=0.0, description="Clock skew tolerated before refusing.")
    max_age_h: float = Field(default=48.0, gt=0.0, description="Older readings are refused.")
    max_implied_kw: float = Field(
        default=1000.0, gt=0.0, description="Meter rise per hour above this is refused."
    )
    min_run_minutes: int = Field(default=15, ge=0, le=240, description="Default HP-Hub 105 minimum run.")
    lockout_minutes: int = Field(default=15, ge=0, le=240, description="Default HP-Hub 105 lock-out.")
    stale_after_s: float = Field(default=180.0, gt=0.0, description="No reading for this long: stale.")
    offline_after_s: float = Field(default=900.0, gt=0.0, description="No reading for this long: offline.")
    max_gap_s: float = Field(default=300.0, gt=0.0, description="Longer gaps make a quarter estimated.")
    close_grace_s: float = Field(
        default=120.0, ge=0.0, description="Site time past a quarter before closing."
    )
    idle_close_s: float = Field(
        default=1800.0,
        gt=0.0,
        description="Close quarters of a site silent this long (missing if unreached).",
    )
    sweep_interval_s: float = Field(default=10.0, gt=0.0, description="Staleness and idle-quarter sweep.")
    batches_in_flight: int = Field(
        default=3, ge=1, le=16, description="Batches prepared while earlier ones are still being written."
    )
    fetch_max_wait_ms: int = Field(
        default=100, ge=0, le=5000, description="How long the broker may hold a fetch to fill a batch."
    )
    gc_gen0_threshold: int = Field(
        default=50_000,
        ge=0,
        description="Allocations between young-generation GC passes (Python's default 700; 0: unchanged).",
    )
