"""Commands to sites, their acknowledgements, and measured reactions."""

from __future__ import annotations

from datetime import timedelta
from enum import IntEnum
from typing import Self

from pydantic import Field, model_validator

from hybridpool_shared.messages.base import Message, SiteId, UtcDatetime

MAX_BLOCK = timedelta(hours=2)


class SgReadyState(IntEnum):
    """SG Ready states: 1 block, 2 normal, 3 recommend on, 4 force on."""

    BLOCK = 1
    NORMAL = 2
    RECOMMEND_ON = 3
    FORCE_ON = 4


class SwitchHeatPump(Message):
    """Command: put a site's heat pump into an SG Ready state until valid_until (a lease)."""

    command_id: str = Field(min_length=1, max_length=80)
    site_id: SiteId
    seq: int = Field(ge=0, description="Per-site sequence; a site applies only newer ones.")
    sg_ready_state: SgReadyState
    issued_at: UtcDatetime
    valid_until: UtcDatetime
    activation_id: str = Field(default="", max_length=80)
    reason: str = Field(default="", max_length=200)

    def kafka_key(self) -> bytes:
        """Key by site: commands to one site stay in order."""
        return self.site_id.encode()

    @model_validator(mode="after")
    def _lease_bounded(self) -> Self:
        if self.valid_until <= self.issued_at:
            raise ValueError("valid_until must be after issued_at")
        if self.sg_ready_state is SgReadyState.BLOCK and self.valid_until - self.issued_at > (MAX_BLOCK):
            raise ValueError("a block may not last longer than 2 hours")
        return self


class CommandAcknowledged(Message):
    """A site accepted or rejected a command."""

    command_id: str = Field(min_length=1, max_length=80)
    site_id: SiteId
    seq: int = Field(ge=0)
    accepted: bool
    reason: str = Field(default="", max_length=200)
    acknowledged_at: UtcDatetime

    def kafka_key(self) -> bytes:
        """Key by site."""
        return self.site_id.encode()


class ReactionMeasured(Message):
    """A site's measured reaction to a command: each phase's time, or None if never reached."""

    command_id: str = Field(min_length=1, max_length=80)
    site_id: SiteId
    activation_id: str = Field(default="", max_length=80)
    sent_at: UtcDatetime
    acknowledged_at: UtcDatetime | None = None
    first_change_at: UtcDatetime | None = None
    reached_50_at: UtcDatetime | None = None
    reached_90_at: UtcDatetime | None = None
    stable_at: UtcDatetime | None = None
    expected_change_kw: float
    observed_change_kw: float | None = None
    responded: bool

    def kafka_key(self) -> bytes:
        """Key by site."""
        return self.site_id.encode()
