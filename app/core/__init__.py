"""What every hookline process shares: settings, the TOML config model, database helpers, the SQL
loader, the migration runner, errors, logging, job names and statuses.

No web framework, model SDK or job queue is imported here (import-linter keeps it so).
"""
