"""Base classes and field types shared by every message on every topic."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, ClassVar, Self

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from hybridpool_shared.timeutil import require_utc

UtcDatetime = Annotated[AwareDatetime, AfterValidator(require_utc)]
"""A timezone-aware timestamp, normalised to UTC; naive datetimes are refused."""

SiteId = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._:-]+$")]
PriceArea = Annotated[str, Field(pattern=r"^(DK1|DK2|SE3|SE4|NO2|DE)$")]


class Message(BaseModel):
    """A strict, immutable message: unknown fields are refused, types are not coerced."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    SCHEMA_VERSION: ClassVar[int] = 1
    schema_version: int = Field(default=1, ge=1, description="Version of this message's schema.")

    def kafka_key(self) -> bytes | None:
        """Return the Kafka record key that orders this message (None: round-robin)."""
        return None

    def to_json_bytes(self) -> bytes:
        """Serialise to compact JSON bytes."""
        return self.model_dump_json().encode()

    @classmethod
    def from_json_bytes(cls, raw: bytes | str) -> Self:
        """Parse and validate a JSON payload."""
        return cls.model_validate_json(raw)


class IntervalMessage(Message):
    """A message about a [start, end) interval in UTC with an explicit length in minutes."""

    interval_start: UtcDatetime = Field(description="Interval start, inclusive, UTC.")
    interval_end: UtcDatetime = Field(description="Interval end, exclusive, UTC.")
    interval_minutes: int = Field(description="Interval length in minutes (15 or 60; 240 blocks).")

    @model_validator(mode="after")
    def _interval_consistent(self) -> Self:
        if self.interval_minutes not in (15, 60, 240):
            raise ValueError("interval_minutes must be 15, 60 or 240")
        span = (self.interval_end - self.interval_start).total_seconds()
        if span != self.interval_minutes * 60:
            raise ValueError(
                f"interval [{self.interval_start.isoformat()}, {self.interval_end.isoformat()}) "
                f"is not {self.interval_minutes} minutes long"
            )
        if self.interval_start.minute % 15 or self.interval_start.second:
            raise ValueError("interval_start must be on a quarter-hour boundary")
        return self


def utc_key(value: datetime) -> str:
    """Return a stable key fragment for a UTC timestamp."""
    return require_utc(value).strftime("%Y-%m-%dT%H:%MZ")
