"""Entry point: `python -m services.price_ingest`."""

from services.price_ingest.app import main

main()
