"""Price-ingest adapters: the Energi Data Service client, replay files, Redis and the dead-letter sink."""
