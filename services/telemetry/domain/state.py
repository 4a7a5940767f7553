"""The next live state of a site from its previous state and a newer reading.

The hot path keeps a small `Last` per site and writes the state document as JSON directly: building and
validating a pydantic SiteLiveState per reading would cost more than everything else together.
`next_state` returns the validated model for code that wants one; both produce the same document.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

import orjson

from hybridpool_shared.messages import TelemetryReported
from hybridpool_shared.sitestate import GatewayStatus, SiteLiveState


@dataclass(frozen=True)
class Timing:
    """A site's protection times (HP-Hub 105)."""

    min_run: timedelta = timedelta(minutes=15)
    lockout: timedelta = timedelta(minutes=15)

    @classmethod
    def of_minutes(cls, min_run_minutes: int, lockout_minutes: int) -> Timing:
        """Return the protection times given in whole minutes, as the registry and settings hold them."""
        return cls(timedelta(minutes=min_run_minutes), timedelta(minutes=lockout_minutes))


class Last(NamedTuple):
    """What the next reading of a site is checked and continued against (measured_s: epoch seconds).

    The switch times stay the readings' own datetimes: the state document needs them as datetimes, and
    converting epoch seconds back costs more per reading than everything else in the document.
    """

    measured_s: float
    meter_kwh: float
    hp_running: bool
    running_since: datetime | None
    stopped_since: datetime | None


def last_of(state: SiteLiveState) -> Last:
    """Return the Last of a stored state."""
    return Last(
        state.measured_at.timestamp(),
        state.meter_reading_kwh,
        state.hp_running,
        state.running_since,
        state.stopped_since,
    )


def advance(prev: Last | None, r: TelemetryReported, t: float | None = None) -> Last:
    """Return the Last after a reading newer than prev (t: its epoch seconds, if known).

    A switch happened somewhere between the two readings; taking the later reading's time as the
    switch time makes lock-out and minimum run end late rather than early: the safe side.
    """
    running_since = prev.running_since if prev else None
    stopped_since = prev.stopped_since if prev else None
    if r.hp_running and not (prev and prev.hp_running and running_since is not None):
        running_since = r.measured_at
    if not r.hp_running and not (prev and not prev.hp_running and stopped_since is not None):
        stopped_since = r.measured_at
    at = r.measured_at.timestamp() if t is None else t
    # tuple.__new__ skips NamedTuple's Python-level __new__: this runs for every reading
    return tuple.__new__(Last, (at, r.meter_reading_kwh, r.hp_running, running_since, stopped_since))


def state_document(r: TelemetryReported, last: Last, received: datetime, timing: Timing) -> dict[str, Any]:
    """Return the SiteLiveState document after reading r, with last = advance(prev, r).

    The reading's validated fields are copied as they are (every one of them is a state field but the
    schema version): a dict copy costs a fraction of naming twelve fields. Timestamps stay datetimes:
    orjson writes them as ISO 8601 far faster than isoformat() would.
    """
    doc = r.__dict__.copy()
    del doc["schema_version"]
    run, rest = last.running_since, last.stopped_since
    doc["running_since"] = run
    doc["stopped_since"] = rest
    doc["lockout_ends_at"] = rest + timing.lockout if rest and not r.hp_running else None
    doc["min_run_ends_at"] = run + timing.min_run if run and r.hp_running else None
    doc["gateway_status"] = GatewayStatus.OK.value
    doc["updated_at"] = received
    doc["received_at"] = received
    return doc


def state_json(r: TelemetryReported, last: Last, received: datetime, timing: Timing) -> bytes:
    """Return the SiteLiveState JSON after reading r (received: its arrival, aware UTC)."""
    return orjson.dumps(state_document(r, last, received, timing))


def next_state(
    prev: SiteLiveState | None, r: TelemetryReported, received_at: datetime, timing: Timing = Timing()
) -> SiteLiveState:
    """Return the validated state after a reading newer than prev."""
    last = advance(last_of(prev) if prev else None, r)
    return SiteLiveState.model_validate_json(state_json(r, last, received_at.astimezone(UTC), timing))


def gateway_status(age_s: float, stale_after_s: float, offline_after_s: float) -> GatewayStatus:
    """Return the gateway status implied by the age of the latest reading's arrival."""
    if age_s >= offline_after_s:
        return GatewayStatus.OFFLINE
    if age_s >= stale_after_s:
        return GatewayStatus.STALE
    return GatewayStatus.OK
