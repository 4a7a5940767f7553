"""Pure price-ingest logic: dataset catalogue, normalisation, upserts, schedules, sample shapes."""
