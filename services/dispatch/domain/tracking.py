"""Per-command reaction tracking: collect a site's readings after a command until its phases are known."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from hybridpool_shared.domain.reaction import (
    PowerSample,
    ReactionPhases,
    ReactionRecord,
    measure_reaction,
    noise_kw,
)

MIN_TRACKED_CHANGE_KW = 0.2


@dataclass
class Tracked:
    """A command whose reaction is being measured."""

    command_id: str
    site_id: str
    activation_id: str
    sent_at: datetime
    baseline_kw: float
    expected_change_kw: float
    history_kw: tuple[float, ...]  # readings before the command: the site's noise
    acknowledged_at: datetime | None = None
    samples: list[PowerSample] = field(default_factory=list)

    def phases(
        self, give_up_after: timedelta, stable_window: timedelta, *, final: bool = False
    ) -> ReactionPhases:
        """Return the phases seen so far (final: the measurement closes now, whatever it saw)."""
        return measure_reaction(
            self.sent_at,
            self.baseline_kw,
            self.expected_change_kw,
            self.samples,
            site_noise_kw=noise_kw(self.history_kw),
            stable_window=stable_window,
            give_up_after=give_up_after,
            final=final,
        )

    def record(self, phases: ReactionPhases) -> ReactionRecord:
        """Return seconds since sending for each phase."""

        def secs(at: datetime | None) -> float | None:
            return (at - self.sent_at).total_seconds() if at is not None else None

        return ReactionRecord(
            ack_s=secs(self.acknowledged_at),
            first_change_s=secs(phases.first_change_at),
            reached_50_s=secs(phases.reached_50_at),
            reached_90_s=secs(phases.reached_90_at),
            stable_s=secs(phases.stable_at),
            responded=phases.responded,
        )


class ReactionTracker:
    """Open measurements, at most one per site (a newer command closes the older one)."""

    def __init__(
        self,
        give_up_after: timedelta = timedelta(minutes=20),
        stable_window: timedelta = timedelta(minutes=2),
    ) -> None:
        self.give_up_after = give_up_after
        self.stable_window = stable_window
        self.open: dict[str, Tracked] = {}
        self.by_command: dict[str, str] = {}
        self.superseded: list[Tracked] = []
        self.unreported: list[tuple[Tracked, ReactionPhases]] = []  # closed, but their report failed

    def start(self, tracked: Tracked) -> Tracked | None:
        """Start measuring a command; return the measurement it supersedes, if any."""
        if abs(tracked.expected_change_kw) < MIN_TRACKED_CHANGE_KW:
            return None
        old = self.open.pop(tracked.site_id, None)
        if old is not None:
            self.by_command.pop(old.command_id, None)
            self.superseded.append(old)
        self.open[tracked.site_id] = tracked
        self.by_command[tracked.command_id] = tracked.site_id
        return old

    def on_ack(self, command_id: str, at: datetime) -> None:
        """Record the acknowledgement time of a tracked command (the first one counts)."""
        site = self.by_command.get(command_id)
        t = self.open.get(site) if site else None
        if t is not None and t.acknowledged_at is None:
            t.acknowledged_at = at

    def on_reading(self, site_id: str, at: datetime, power_kw: float) -> None:
        """Add a reading to the site's open measurement."""
        t = self.open.get(site_id)
        if t is not None and at > t.sent_at:
            t.samples.append(PowerSample(at, power_kw))

    def finished(self, now: datetime) -> list[tuple[Tracked, ReactionPhases]]:
        """Close and return the measurements whose phases are complete (or that timed out).

        Those handed back with `unreport` come first, as they were closed.
        """
        done = self.unreported
        self.unreported = []
        done += [(t, t.phases(self.give_up_after, self.stable_window, final=True)) for t in self.superseded]
        self.superseded.clear()
        for site, t in list(self.open.items()):
            phases = t.phases(self.give_up_after, self.stable_window)
            if not phases.complete:
                if now - t.sent_at < self.give_up_after:
                    continue
                phases = t.phases(self.give_up_after, self.stable_window, final=True)
            done.append((t, phases))
            del self.open[site]
            self.by_command.pop(t.command_id, None)
        return done

    def unreport(self, closed: list[tuple[Tracked, ReactionPhases]]) -> None:
        """Hand back closed measurements whose report failed: the next `finished` returns them again."""
        self.unreported = closed + self.unreported


def epoch_to_dt(at_s: float) -> datetime:
    """Return an aware UTC datetime for epoch seconds."""
    return datetime.fromtimestamp(at_s, tz=UTC)
