"""Dead-lettering on the ingest side: a rejected API record goes to `<topic>.dlq` with its reason."""

from __future__ import annotations

import base64
import json

from faststream.kafka import KafkaBroker

from hybridpool_shared.messages import DeadLettered
from hybridpool_shared.messaging import publish
from hybridpool_shared.timeutil import utc_now
from hybridpool_shared.topics import TopicSpec, dead_letter_spec
from services.price_ingest.domain.normalise import Rejection


def letter_for(spec: TopicSpec, rejection: Rejection, group: str) -> DeadLettered:
    """Build the DeadLettered record for a rejected source record (no Kafka offset: it never was one)."""
    raw = json.dumps(rejection.record, sort_keys=True, default=str)
    return DeadLettered(
        source_topic=spec.name,
        source_partition=0,
        source_offset=0,
        source_key_b64=base64.b64encode(rejection.key).decode() if rejection.key else None,
        consumer_group=f"{group}:{rejection.dataset}",
        error_kind=rejection.kind,
        error=f"{rejection.dataset}: {rejection.reason}"[:8000],
        payload_b64=base64.b64encode(raw.encode()).decode(),
        payload_text=raw,
        dead_lettered_at=utc_now(),
    )


async def park(broker: KafkaBroker, spec: TopicSpec, rejection: Rejection, group: str) -> None:
    """Publish a rejected record to the topic's dead-letter topic."""
    await publish(broker, dead_letter_spec(spec), letter_for(spec, rejection, group))
