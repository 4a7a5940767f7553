"""Following the day-ahead plan between activations: which SG Ready state a site's plan asks for now."""

from __future__ import annotations

from datetime import datetime

from hybridpool_shared.messages import SgReadyState, SitePlanComputed

QUARTER_S = 900.0


def planned_state(plan: SitePlanComputed, now: datetime) -> tuple[datetime, SgReadyState] | None:
    """Return (quarter start, state) the plan wants now: HP quarters normal, gas quarters blocked."""
    index = int((now - plan.first_quarter_start).total_seconds() // QUARTER_S)
    if index < 0 or index >= len(plan.hp_on):
        return None
    state = SgReadyState.NORMAL if plan.hp_on[index] else SgReadyState.BLOCK
    return plan.quarter_start(index), state
