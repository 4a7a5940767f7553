"""Pure dispatch logic: unit choice, the closed loop per activation, the fleet view, safety checks."""
