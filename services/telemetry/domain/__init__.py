"""Pure logic of the telemetry service: reading checks, live-state transitions, quarter aggregates."""
