"""The dead-letter record: what failed, why, and the raw payload, so nothing is lost."""

from __future__ import annotations

from pydantic import Field

from hybridpool_shared.messages.base import Message, UtcDatetime


class DeadLettered(Message):
    """A message could not be processed and was parked on `<topic>.dlq`."""

    source_topic: str = Field(min_length=1)
    source_partition: int = Field(ge=0)
    source_offset: int = Field(ge=0)
    source_key_b64: str | None = None
    consumer_group: str = Field(min_length=1)
    error_kind: str = Field(min_length=1, max_length=80, description="e.g. validation, decode.")
    error: str = Field(max_length=8000)
    payload_b64: str = Field(description="The raw payload, base64.")
    payload_text: str | None = Field(default=None, description="The payload as UTF-8 if it was.")
    dead_lettered_at: UtcDatetime
