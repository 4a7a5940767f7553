"""Entry point: `python -m services.opsroom`."""

from services.opsroom.app import main

main()
