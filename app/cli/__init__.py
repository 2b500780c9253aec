"""The ``hookline`` command and every operator tool: dev, the embedded Postgres, send, replay,
watch, status and bench."""
