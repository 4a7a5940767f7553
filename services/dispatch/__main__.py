"""Entry point: `python -m services.dispatch`."""

from services.dispatch.app import main

main()
