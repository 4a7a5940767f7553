"""The dispatcher's view of every unit: power, run state, rest/min-run windows, price, recent starts."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

DEFAULT_MIN_RUN_S = 15 * 60.0
DEFAULT_LOCKOUT_S = 15 * 60.0
STARTS_WINDOW_S = 24 * 3600.0
STALE_AFTER_S = 5 * 60.0
NOISE_HISTORY = 12


@dataclass
class Unit:
    """One site's heat pump as dispatch sees it; times are epoch seconds."""

    site_id: str
    rated_kw: float = 3.0
    min_run_s: float = DEFAULT_MIN_RUN_S
    lockout_s: float = DEFAULT_LOCKOUT_S
    power_kw: float = 0.0
    hp_running: bool = False
    measured_s: float = 0.0
    running_since_s: float | None = None
    stopped_since_s: float | None = None
    balance_price_eur_per_mwh: float | None = None
    starts: deque[float] = field(default_factory=deque)
    recent_power_kw: deque[float] = field(default_factory=lambda: deque(maxlen=NOISE_HISTORY))
    slow: bool = False
    on_power_kw: float = 0.0  # highest power seen running: what switching on adds, without master data
    rated_known: bool = False
    in_pool: bool = True  # False: an operator excluded the site; it gets no command from dispatch
    area: str | None = None  # bidding zone from master data; None until known

    def free_from_s(self) -> float:
        """Return when the unit may next change state: end of its lock-out (idle) or min run (running)."""
        if self.hp_running:
            return (self.running_since_s or 0.0) + self.min_run_s
        return (self.stopped_since_s or 0.0) + self.lockout_s

    def online(self, now_s: float) -> bool:
        """Return True if the unit reported recently."""
        return now_s - self.measured_s <= STALE_AFTER_S

    def can_stop(self, now_s: float) -> bool:
        """Return True if the HP runs, past its minimum run time."""
        return self.hp_running and now_s >= self.free_from_s()

    def can_start(self, now_s: float) -> bool:
        """Return True if the HP is idle, past its lock-out."""
        return not self.hp_running and now_s >= self.free_from_s()

    def expected_on_kw(self) -> float:
        """Return the electric power switching this unit on is expected to add."""
        if self.rated_known:
            return self.rated_kw
        return self.on_power_kw if self.on_power_kw > 0.1 else 0.6 * self.rated_kw

    def recent_starts(self, now_s: float) -> int:
        """Return how many starts the unit made in the last day."""
        while self.starts and now_s - self.starts[0] > STARTS_WINDOW_S:
            self.starts.popleft()
        return len(self.starts)


class Fleet:
    """Every known unit, updated from telemetry, master data and balance prices."""

    def __init__(self, min_run_s: float = DEFAULT_MIN_RUN_S, lockout_s: float = DEFAULT_LOCKOUT_S) -> None:
        self.units: dict[str, Unit] = {}
        self.min_run_s = min_run_s
        self.lockout_s = lockout_s

    def unit(self, site_id: str) -> Unit:
        """Return the unit of a site, creating it on first sight."""
        found = self.units.get(site_id)
        if found is None:
            found = self.units[site_id] = Unit(site_id, min_run_s=self.min_run_s, lockout_s=self.lockout_s)
        return found

    def observe(self, site_id: str, at_s: float, power_kw: float, hp_running: bool) -> None:
        """Apply one telemetry reading (older readings than the last are ignored)."""
        u = self.unit(site_id)
        if at_s < u.measured_s:
            return
        if u.measured_s == 0.0:
            pass  # first sight: the history is unknown, the site's own controller guards its rest
        elif hp_running and not u.hp_running:
            u.running_since_s = at_s
            u.starts.append(at_s)
        elif u.hp_running and not hp_running:
            u.stopped_since_s = at_s
        u.hp_running, u.power_kw, u.measured_s = hp_running, power_kw, at_s
        u.recent_power_kw.append(power_kw)
        if hp_running and power_kw > 0.1:
            u.on_power_kw = max(u.on_power_kw, power_kw)

    def set_master(
        self, site_id: str, rated_kw: float, min_run_min: int, lockout_min: int, area: str | None = None
    ) -> None:
        """Apply a site's master data (HP-Hub 104/105 and its bidding zone)."""
        u = self.unit(site_id)
        u.rated_kw, u.min_run_s, u.lockout_s = rated_kw, min_run_min * 60.0, lockout_min * 60.0
        u.rated_known = True
        u.area = area

    def set_price(self, site_id: str, balance_price_eur_per_mwh: float) -> None:
        """Apply a site's current balance price."""
        self.unit(site_id).balance_price_eur_per_mwh = balance_price_eur_per_mwh

    def set_in_pool(self, site_id: str, in_pool: bool) -> None:
        """Apply an operator's decision to keep the site in the pool or not."""
        self.unit(site_id).in_pool = in_pool

    def remove(self, site_id: str) -> None:
        """Forget a site that left the registry."""
        self.units.pop(site_id, None)
