"""Entry point: `python -m services.market_sim`."""

from services.market_sim.app import main

main()
