"""Settings of the market_sim service."""

from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from hybridpool_shared.settings import ServiceSettings


class MarketSimSettings(ServiceSettings):
    """Environment variables prefixed MARKET_SIM_; KAFKA_BOOTSTRAP and REDIS_URL are shared."""

    model_config = SettingsConfigDict(env_prefix="MARKET_SIM_", env_ignore_empty=True, extra="ignore")

    seed: int = Field(default=42, description="Same seed, same frequency trace, prices and activations.")
    scenario: str = Field(default="quiet", description="quiet | big_frequency_drop | long_up_activation")
    frequency_areas: str = Field(default="DK1,DK2", description="Areas whose frequency is published.")
    frequency_enabled: bool = Field(default=True, description="Publish grid.frequency at 1 s.")
    activation_tick_s: float = Field(default=5.0, gt=0, description="How often due activations are drawn.")
    frequency_replay_file: Path | None = Field(
        default=None,
        description="Text file of frequency samples in Hz, one per line at 1 s; replayed in a loop from "
        "the second of the day (seed-independent). Unset: the synthetic trace.",
    )
    mfrr_replay_file: Path | None = Field(
        default=None, description="JSON list of MfrrEnergyActivationMarket records to replay."
    )
