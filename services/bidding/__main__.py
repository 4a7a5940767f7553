"""Entry point: `python -m services.bidding`."""

from services.bidding.app import main

main()
