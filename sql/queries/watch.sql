-- Watched tables (app/watch.py; psycopg: %(name)s placeholders). The logic is in the SQL functions
-- of sql/migrations/0003_watch.sql, 0032_watch_never_fails_writes.sql, 0033_watch_retries_busy_tables.sql
-- and 0050_watch_columns_compare_arrays_safely.sql (0051 fixes the trigger function's session settings),
-- so psql users and hookline run exactly the same code.

-- name: watch
-- Install or update a table's watch triggers; returns created, replaced or unchanged.
SELECT hookline.watch(
    %(table)s::text::regclass,
    %(operations)s::text[],
    %(columns)s::text[],
    %(condition)s::text,
    %(key_columns)s::text[],
    %(exclude_columns)s::text[],
    %(max_value_bytes)s::integer) AS result;

-- name: watched_table
-- One watched table, as the view shows it.
SELECT table_name, event_types, operations, columns, condition, key_columns, exclude_columns,
       max_value_bytes, active, attention
FROM hookline.watched
WHERE relation = %(table)s::text::regclass;

-- name: unwatch
-- Drop a table's watch triggers; false when it was not watched.
SELECT hookline.unwatch(%(table)s::text::regclass) AS removed;

-- name: watched
-- Every watched table.
SELECT table_name, event_types, operations, columns, condition, key_columns, exclude_columns,
       max_value_bytes, active, attention
FROM hookline.watched
ORDER BY table_name;
