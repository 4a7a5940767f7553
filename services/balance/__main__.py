"""Entry point: `python -m services.balance`."""

from services.balance.app import main

main()
