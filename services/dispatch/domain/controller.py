"""The closed loop of one activation: dispatch, watch acks and power, replace non-responders, release."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from hybridpool_shared.domain.reaction import CurvePoint
from hybridpool_shared.messages import Direction, SgReadyState
from services.dispatch.domain.fleet import Unit
from services.dispatch.domain.products import ActivationSpec, active_state, sign
from services.dispatch.domain.selection import choose_units


@dataclass(frozen=True)
class LoopConfig:
    """Timing and margins of the closed loop (seconds)."""

    ack_timeout_s: float = 10.0
    max_resends: int = 3
    first_change_deadline_up_s: float = 90.0
    first_change_deadline_down_s: float = 150.0
    settle_up_s: float = 180.0
    settle_down_s: float = 600.0
    margin: float = 0.05
    spare_share: float = 0.1
    release_stagger_slots: int = 10
    release_stagger_step_s: float = 30.0
    lease_grace_s: float = 300.0
    max_block_s: float = 7200.0 - 300.0  # a block never exceeds 2 h: rotate a little before


@dataclass
class Assignment:
    """A unit switched for an activation and what became of it."""

    site_id: str
    state: SgReadyState
    sent_s: float
    expected_kw: float
    baseline_kw: float
    command_id: str = ""
    last_sent_s: float = 0.0
    acked_s: float | None = None
    rejected: str = ""
    resends: int = 0
    first_change_s: float | None = None
    failed: str = ""
    settled: bool = False
    released_s: float | None = None
    replaces: str = ""

    @property
    def live(self) -> bool:
        """Return True if the unit still counts towards the target."""
        return not self.failed and self.released_s is None


@dataclass(frozen=True)
class Switch:
    """Send a unit into the activation's state."""

    site_id: str
    state: SgReadyState
    expected_kw: float
    replaces: str = ""


@dataclass(frozen=True)
class Resend:
    """Send an unacknowledged command again (same command_id and seq)."""

    site_id: str
    command_id: str


@dataclass(frozen=True)
class Release:
    """Hand a unit back to normal operation (SG Ready 2)."""

    site_id: str
    command_id: str


Action = Switch | Resend | Release


@dataclass
class ActivationLoop:
    """State of one activation's closed loop; step() is called periodically with the fleet view."""

    spec: ActivationSpec
    config: LoopConfig = field(default_factory=LoopConfig)
    assignments: dict[str, Assignment] = field(default_factory=dict)
    curve: list[CurvePoint] = field(default_factory=list)
    shortfall_reason: str = ""
    last_gap_fill_s: float = 0.0
    finished: bool = False

    # --- bookkeeping called by the adapter after a command was (re)sent or acknowledged -------------

    def on_sent(self, action: Switch, command_id: str, now_s: float, baseline_kw: float) -> None:
        """Record that a Switch went out."""
        self.assignments[action.site_id] = Assignment(
            site_id=action.site_id,
            state=action.state,
            sent_s=now_s,
            expected_kw=action.expected_kw,
            baseline_kw=baseline_kw,
            command_id=command_id,
            last_sent_s=now_s,
            replaces=action.replaces,
        )

    def on_published(self, site_id: str, command_id: str, now_s: float) -> None:
        """Record that a command whose first publishing failed is on the wire now (acks are due from now)."""
        a = self.assignments.get(site_id)
        if a is not None and a.command_id == command_id:
            a.last_sent_s = now_s

    def on_resent(self, site_id: str, now_s: float) -> None:
        """Record a re-send."""
        a = self.assignments[site_id]
        a.resends += 1
        a.last_sent_s = now_s

    def on_refused(self, site_id: str, reason: str, now_s: float) -> None:
        """Record that the central safety check refused a switch (the unit is not used)."""
        self.assignments[site_id] = Assignment(
            site_id, SgReadyState.NORMAL, now_s, 0.0, 0.0, failed=f"refused: {reason}"
        )

    def on_ack(self, site_id: str, command_id: str, accepted: bool, reason: str, at_s: float) -> None:
        """Record a site's acknowledgement of its current command."""
        a = self.assignments.get(site_id)
        if a is None or a.command_id != command_id or a.acked_s is not None:
            return
        a.acked_s = at_s
        if not accepted:
            a.rejected = reason or "rejected"

    def on_released(self, site_id: str, now_s: float) -> None:
        """Record that a unit was handed back."""
        self.assignments[site_id].released_s = now_s

    # --- the loop ---------------------------------------------------------------------------------

    def delivered_kw(self, units: Mapping[str, Unit]) -> float:
        """Return the measured change of the dispatched units (positive in the activation's direction)."""
        s = sign(self.spec.direction)
        total = 0.0
        for a in self.assignments.values():
            u = units.get(a.site_id)
            if u is not None and a.state is not SgReadyState.NORMAL and a.released_s is None:
                total += s * (a.baseline_kw - u.power_kw)
        return total

    def step(
        self, now_s: float, units: Mapping[str, Unit], frequency_hz: float | None = None
    ) -> list[Action]:
        """Advance the loop: return the commands to send now."""
        if now_s < self.spec.start_s or self.finished:
            return []
        if now_s >= self.spec.end_s:
            return self._release(now_s, units, all_units=True)
        target = self.spec.target_kw(now_s, frequency_hz)
        self.curve.append(CurvePoint(_dt(now_s), self.delivered_kw(units), target))
        actions: list[Action] = []
        actions += self._watch(now_s, units)
        actions += self._rotate(now_s)
        actions += self._fill(now_s, units, target)
        actions += self._trim(now_s, units, target)
        return actions

    def _watch(self, now_s: float, units: Mapping[str, Unit]) -> list[Action]:
        """Re-send unacknowledged commands; mark units that did not respond as failed."""
        out: list[Action] = []
        s = sign(self.spec.direction)
        deadline = (
            self.config.first_change_deadline_up_s
            if self.spec.direction is Direction.UP
            else self.config.first_change_deadline_down_s
        )
        settle = self.config.settle_up_s if self.spec.direction is Direction.UP else self.config.settle_down_s
        for a in self.assignments.values():
            if not a.live:
                continue
            u = units.get(a.site_id)
            if a.rejected:
                a.failed = f"rejected: {a.rejected}"
            elif a.acked_s is None and now_s - a.last_sent_s >= self.config.ack_timeout_s:
                if a.resends < self.config.max_resends:
                    out.append(Resend(a.site_id, a.command_id))
                else:
                    a.failed = "no acknowledgement"
            if a.failed or u is None:
                continue
            moved = s * (a.baseline_kw - u.power_kw)
            if a.first_change_s is None and u.measured_s > a.sent_s and moved >= 0.1 * a.expected_kw:
                a.first_change_s = u.measured_s
            if a.first_change_s is None and now_s - a.sent_s > deadline:
                a.failed = "no power change"
            elif not a.settled and now_s - a.sent_s >= settle:
                a.settled = True
                a.expected_kw = max(0.0, moved)
        return out

    def _rotate(self, now_s: float) -> list[Action]:
        """Hand back units blocked for nearly 2 h (their rest is long over); _fill replaces them."""
        out: list[Action] = []
        for a in self.assignments.values():
            if a.live and a.state is SgReadyState.BLOCK and now_s - a.sent_s >= self.config.max_block_s:
                out.append(Release(a.site_id, a.command_id))
                a.failed = "rotated: 2 h block limit"
        return out

    def _fill(self, now_s: float, units: Mapping[str, Unit], target: float) -> list[Action]:
        """Dispatch more units while the committed change falls short of the target."""
        live = [a for a in self.assignments.values() if a.live]
        committed = sum(a.expected_kw for a in live)
        need = target * (1 + self.config.margin) - committed
        if need <= 0.05 * max(target, 1e-9):
            return []
        sel = choose_units(
            units.values(),
            self.spec.direction,
            need,
            now_s,
            exclude=self.assignments,
            spare_share=self.config.spare_share,
            area=self.spec.area,
        )
        if sel.shortfall_kw(need) > 0.02 * target and not self.shortfall_reason:
            self.shortfall_reason = (
                f"too few available units: needed {need:.0f} kW more, only {sel.available_kw:.0f} kW "
                f"switchable ({sel.blocked_by_rules} units within lock-out/min-run, {sel.offline} offline)"
            )
        failed = [a.site_id for a in self.assignments.values() if a.failed and not a.replaces]
        state = active_state(self.spec.direction)
        return [
            Switch(p.site_id, state, p.expected_kw, replaces=failed[i] if i < len(failed) else "")
            for i, p in enumerate(sel.picks)
        ]

    def _trim(self, now_s: float, units: Mapping[str, Unit], target: float) -> list[Action]:
        """Release surplus units when the target fell (frequency products), where their rules allow."""
        live = sorted((a for a in self.assignments.values() if a.live), key=lambda a: -a.sent_s)
        surplus = sum(a.expected_kw for a in live) - target * (1 + self.config.margin)
        out: list[Action] = []
        for a in live:
            if surplus <= 0 or a.expected_kw > surplus:
                continue
            if self._releasable(a, now_s, units):
                out.append(Release(a.site_id, a.command_id))
                surplus -= a.expected_kw
        return out

    def _releasable(self, a: Assignment, now_s: float, units: Mapping[str, Unit]) -> bool:
        """A blocked HP may restart only after its lock-out; a forced-on HP may stop after its min run."""
        u = units.get(a.site_id)
        if a.state is SgReadyState.BLOCK:
            rest = u.lockout_s if u else 15 * 60.0
            return now_s >= a.sent_s + rest
        run = u.min_run_s if u else 15 * 60.0
        return now_s >= a.sent_s + run

    def release_at_s(self, a: Assignment, index: int, units: Mapping[str, Unit]) -> float:
        """Return when a unit is handed back: after the end and its rules, staggered against rebound."""
        u = units.get(a.site_id)
        hold = (
            (u.lockout_s if u else 900.0) if a.state is SgReadyState.BLOCK else (u.min_run_s if u else 900.0)
        )
        slot = index % max(1, self.config.release_stagger_slots)
        return max(self.spec.end_s, a.sent_s + hold) + slot * self.config.release_stagger_step_s

    def _release(self, now_s: float, units: Mapping[str, Unit], *, all_units: bool) -> list[Action]:
        out: list[Action] = []
        pending = [a for a in self.assignments.values() if a.released_s is None and a.command_id]
        for i, a in enumerate(sorted(pending, key=lambda a: a.site_id)):
            if now_s >= self.release_at_s(a, i, units):
                out.append(Release(a.site_id, a.command_id))
        if all_units and not pending:
            self.finished = True
        return out

    def planned_rebound(self, units: Mapping[str, Unit]) -> list[tuple[float, float]]:
        """Return (release time, kW returning) per unit still held: the rebound, planned in advance."""
        pending = [a for a in self.assignments.values() if a.released_s is None and a.command_id]
        return sorted(
            (self.release_at_s(a, i, units), a.expected_kw)
            for i, a in enumerate(sorted(pending, key=lambda a: a.site_id))
        )

    def counts(self) -> tuple[int, int, int]:
        """Return (units dispatched, replacements, unresponsive units)."""
        sent = [a for a in self.assignments.values() if a.command_id]
        return len(sent), sum(1 for a in sent if a.replaces), sum(1 for a in sent if a.failed)


def _dt(now_s: float) -> datetime:
    return datetime.fromtimestamp(now_s, tz=UTC)
