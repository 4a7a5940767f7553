"""Entry point: `python -m services.site_sim`."""

from services.site_sim.app import main

main()
