"""Checks a command history against lock-out and minimum-run rules (used by tests and the audit endpoint)."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from hybridpool_shared.messages import SgReadyState

TOLERANCE_S = 1e-6


@dataclass(frozen=True)
class LoggedCommand:
    """One command as logged: when it was issued, to which site, which state."""

    site_id: str
    issued_s: float
    state: SgReadyState
    command_id: str


def rule_violations(
    log: Iterable[LoggedCommand], rules: Mapping[str, tuple[float, float]], default: tuple[float, float]
) -> list[str]:
    """Return every place where a command let an HP restart inside its lock-out or stop inside its min run.

    rules maps site_id to (min_run_s, lockout_s). A BLOCK stops the HP: the next command that lets it run
    (NORMAL/RECOMMEND_ON/FORCE_ON) must come at least lockout_s later. A FORCE_ON starts it: the next
    command that lets it stop (BLOCK/NORMAL) must come at least min_run_s later.
    """
    by_site: dict[str, list[LoggedCommand]] = {}
    for c in log:
        by_site.setdefault(c.site_id, []).append(c)
    problems: list[str] = []
    for site, cmds in by_site.items():
        min_run_s, lockout_s = rules.get(site, default)
        ordered = sorted(cmds, key=lambda c: c.issued_s)
        for prev, nxt in itertools.pairwise(ordered):
            gap = nxt.issued_s - prev.issued_s
            if nxt.command_id == prev.command_id:
                continue
            restart = prev.state is SgReadyState.BLOCK and nxt.state is not SgReadyState.BLOCK
            stop = prev.state is SgReadyState.FORCE_ON and nxt.state in (
                SgReadyState.BLOCK,
                SgReadyState.NORMAL,
            )
            if restart and gap + TOLERANCE_S < lockout_s:
                problems.append(
                    f"{site}: {nxt.state.name} {gap:.0f} s after BLOCK (lock-out {lockout_s:.0f} s)"
                )
            if stop and gap + TOLERANCE_S < min_run_s:
                problems.append(
                    f"{site}: {nxt.state.name} {gap:.0f} s after FORCE_ON (min run {min_run_s:.0f} s)"
                )
    return problems
