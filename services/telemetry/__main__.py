"""Entry point: `python -m services.telemetry`."""

from services.telemetry.app import main

main()
