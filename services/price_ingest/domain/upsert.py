"""Idempotent publishing: a price is published only when its value for its key is new or changed."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from hybridpool_shared.messages import Message

# Fields that describe the delivery, not the price: a change in them alone is not a new value.
_NOT_VALUE = frozenset({"ingested_at", "source", "corrects_previous", "schema_version"})


class Decision(StrEnum):
    """What to do with a normalised price given what was published before for its key."""

    NEW = "new"
    UNCHANGED = "unchanged"
    CORRECTED = "corrected"


def fingerprint(message: Message) -> str:
    """Return a short stable digest of the message's value fields."""
    data = message.model_dump(mode="json", exclude=set(_NOT_VALUE))
    return hashlib.blake2b(json.dumps(data, sort_keys=True).encode(), digest_size=12).hexdigest()


def raw_fingerprint(kind: str, record: Any) -> str:
    """Return a digest of a rejected raw record and its reason kind (dead-letter each once)."""
    body = json.dumps(record, sort_keys=True, default=str)
    return hashlib.blake2b(f"{kind}|{body}".encode(), digest_size=12).hexdigest()


def decide(previous: str | None, current: str) -> Decision:
    """Compare a new value's fingerprint with the last published one for the same key."""
    if previous is None:
        return Decision.NEW
    return Decision.UNCHANGED if previous == current else Decision.CORRECTED


@dataclass
class UpsertPlan:
    """Which messages of a batch to publish (in order), and how many were unchanged or corrections."""

    publish: list[tuple[bytes, str, bool]] = field(default_factory=list)
    unchanged: int = 0
    corrected: int = 0


def plan_upserts(keyed: list[tuple[bytes, str]], published: Mapping[bytes, str]) -> UpsertPlan:
    """Plan a batch of (key, fingerprint) against the published fingerprints; later wins within a batch.

    A key whose last value in the batch is already published is left alone, so a source that repeats
    a key with two values does not flip the topic back and forth on every re-ingest.
    """
    last = dict(keyed)
    known = dict(published)
    plan = UpsertPlan()
    for key, fp in keyed:
        if known.get(key) == last[key] and key in published:
            plan.unchanged += 1
            continue
        decision = decide(known.get(key), fp)
        if decision is Decision.UNCHANGED:
            plan.unchanged += 1
            continue
        is_correction = decision is Decision.CORRECTED
        plan.corrected += is_correction
        plan.publish.append((key, fp, is_correction))
        known[key] = fp
    return plan
