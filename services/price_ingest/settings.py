"""Settings of the price_ingest service."""

from __future__ import annotations

from datetime import time, timedelta
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from hybridpool_shared.settings import ServiceSettings
from services.price_ingest.adapters.eds import ClientConfig
from services.price_ingest.adapters.replay import BUNDLED_SAMPLE
from services.price_ingest.pipeline import IngestOptions


class PriceIngestSettings(ServiceSettings):
    """Environment variables prefixed PRICE_INGEST_; KAFKA_BOOTSTRAP and REDIS_URL are shared."""

    model_config = SettingsConfigDict(env_prefix="PRICE_INGEST_", env_ignore_empty=True, extra="ignore")

    source: Literal["api", "replay"] = Field(
        default="replay", description="api: Energi Data Service; replay: files in the API's format."
    )
    api_base_url: str = Field(default="https://api.energidataservice.dk", description="EDS base URL.")
    api_timeout_s: float = Field(default=30.0, gt=0)
    api_max_concurrency: int = Field(default=4, ge=1, le=32, description="Parallel requests at most.")
    api_page_size: int = Field(default=10_000, ge=1, description="Records per request (offset/limit).")
    api_max_attempts: int = Field(default=6, ge=1)
    api_backoff_base_s: float = Field(default=0.5, ge=0)
    api_max_retry_after_s: float = Field(default=300.0, ge=0, description="Cap on a 429's Retry-After.")
    replay_dir: Path = Field(default=BUNDLED_SAMPLE, description="Replay files (default: bundled sample).")
    replay_shift_to_today: bool = Field(
        default=True, description="Replay: map sample days onto today/tomorrow (source replay-shifted:…)."
    )
    replay_history: bool = Field(
        default=False, description="Replay: also publish the whole sample at its own dates on start."
    )
    areas: str = Field(default="DK1,DK2", description="Comma-separated price areas to accept.")
    fcr_auction_types: str = Field(default="Total", description="FcrNdDK2 AuctionType values to ingest.")
    expand_hourly: bool = Field(default=False, description="Repeat hourly prices over their quarters.")
    scheduler_enabled: bool = Field(default=True, description="Run the periodic fetch loops.")
    day_ahead_publish_local_time: time = Field(
        default=time(13, 0), description="Copenhagen time after which next-day prices are fetched."
    )
    day_ahead_retry_s: float = Field(default=120.0, gt=0, description="Retry until the day is complete.")
    imbalance_poll_s: float = Field(default=300.0, gt=0)
    imbalance_lookback_h: float = Field(default=6.0, gt=0)
    reserve_poll_s: float = Field(default=6 * 3600.0, gt=0, description="Capacity auctions: today+tomorrow.")
    redis_namespace: str = Field(default="", description="Prefix of every Redis key this service writes.")
    backfill_window_days: int = Field(default=7, ge=1, le=31, description="Days per backfill request.")
    curve_retention_days: int = Field(default=62, ge=1, description="Redis curve length before its newest.")

    def client_config(self) -> ClientConfig:
        """Return the EDS client configuration."""
        return ClientConfig(
            base_url=self.api_base_url,
            timeout_s=self.api_timeout_s,
            max_concurrency=self.api_max_concurrency,
            page_size=self.api_page_size,
            max_attempts=self.api_max_attempts,
            backoff_base_s=self.api_backoff_base_s,
            max_retry_after_s=self.api_max_retry_after_s,
        )

    def ingest_options(self) -> IngestOptions:
        """Return the normalisation options."""
        return IngestOptions(
            areas=tuple(a.strip() for a in self.areas.split(",") if a.strip()),
            auction_types=tuple(a.strip() for a in self.fcr_auction_types.split(",") if a.strip()),
            expand_hourly=self.expand_hourly,
        )

    def curve_retention(self) -> timedelta:
        """Return how much history each Redis curve keeps."""
        return timedelta(days=self.curve_retention_days)
