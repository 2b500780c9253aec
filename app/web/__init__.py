"""The web process: the Starlette application factory, ingest, lifespan state, metrics."""
