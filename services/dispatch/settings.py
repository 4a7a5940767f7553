"""Settings of the dispatch service."""

from typing import Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from hybridpool_shared.settings import ServiceSettings


class DispatchSettings(ServiceSettings):
    """Environment variables prefixed DISPATCH_; KAFKA_BOOTSTRAP and REDIS_URL are shared."""

    model_config = SettingsConfigDict(env_prefix="DISPATCH_", env_ignore_empty=True, extra="ignore")

    tick_s: float = Field(default=1.0, gt=0, le=60, description="Closed-loop period.")
    ack_timeout_s: float = Field(default=10.0, gt=0, description="Re-send a command not acked this long.")
    max_resends: int = Field(default=3, ge=0, le=20)
    first_change_deadline_up_s: float = Field(
        default=90.0, gt=0, description="Off: no change by then = failed."
    )
    first_change_deadline_down_s: float = Field(default=150.0, gt=0, description="On: no change = failed.")
    settle_up_s: float = Field(default=180.0, gt=0, description="After this a unit's change is what it is.")
    settle_down_s: float = Field(default=600.0, gt=0)
    margin: float = Field(default=0.05, ge=0, le=1, description="Over-allocation against non-delivery.")
    spare_share: float = Field(default=0.1, ge=0, le=0.9, description="Capacity kept back for replacements.")
    release_stagger_slots: int = Field(default=10, ge=1, description="Release groups after an activation.")
    release_stagger_step_s: float = Field(default=30.0, ge=0, description="Seconds between release groups.")
    lease_grace_s: float = Field(default=300.0, gt=0, description="Lease beyond the planned release.")
    reaction_give_up_s: float = Field(default=2400.0, gt=0, description="A reaction not seen by then: none.")
    reaction_stable_window_s: float = Field(default=120.0, gt=0, description="Stable = flat this long.")
    default_min_run_minutes: float = Field(default=15, ge=0, description="Until master data says otherwise.")
    default_lockout_minutes: float = Field(default=15, ge=0, description="Until master data says otherwise.")
    clock: Literal["wall", "telemetry"] = Field(
        default="wall", description="telemetry: follow the sites' event time (a simulator running faster)."
    )
    speedup: float = Field(default=1.0, gt=0, le=3600, description="Event seconds per real second.")
    site_prefix: str = Field(default="", description="Serve only sites whose id starts with this (pools).")
    publish_concurrency: int = Field(default=1000, ge=1, le=20000, description="Command publishes in flight.")
    follow_plan: bool = Field(default=True, description="Apply pool.plan between activations.")
    key_prefix: str = Field(default="dispatch", pattern=r"^[A-Za-z0-9_.:-]+$", description="Redis keys.")
    log_max_len: int = Field(default=200_000, ge=1000, description="Command log stream length (approx).")
