-- Row events: the same row gives the same key, and the same JSON, whatever the writer's session settings.
--
-- hookline.row_event() turns the row into jsonb in the writer's session, and some types' JSON text
-- depends on its settings: timestamptz on TimeZone ("2026-06-01T10:00:00+00:00" in UTC,
-- "2026-06-01T12:00:00+02:00" in Europe/Berlin), interval on IntervalStyle ("1 day" or "P1D"), bytea on
-- bytea_output (hex or escape), float on extra_float_digits. The key's JSON text is the event's
-- ordering_key and job lock, and part of its delivery_id: a row keyed by a timestamptz (a table
-- partitioned by time has one in its primary key) got a different ordering key from a writer in another
-- time zone, so its events could run at the same time and out of order, where the README promises one
-- row's events run one at a time, in commit order. The function now runs with fixed settings: TimeZone
-- UTC (every timestamptz in a payload reads +00:00), IntervalStyle postgres, bytea_output hex and
-- extra_float_digits 1 (the defaults). A row's events made before this migration in another time zone
-- keep their key: the first event of such a row after the upgrade may run beside one still queued.
-- The four settings cost about 1.5 us per row event (a row event is about 200 us).
--
-- A later CREATE OR REPLACE of hookline.row_event() resets these with its other settings: set them again.

-- ALTER FUNCTION ... SET adds to the function's settings: its search_path (0032) stays as it is.
ALTER FUNCTION hookline.row_event() SET timezone = 'UTC';
ALTER FUNCTION hookline.row_event() SET intervalstyle = 'postgres';
ALTER FUNCTION hookline.row_event() SET bytea_output = 'hex';
ALTER FUNCTION hookline.row_event() SET extra_float_digits = 1;

COMMENT ON FUNCTION hookline.row_event() IS
  'Trigger function installed by hookline.watch(): stores one row change as a hookline.events row '
  '(source ''db'', type schema.table.op, payload {op, table, key, old, new, changed, txid[, truncated]}), '
  'whose job events_enqueue defers in the same transaction. It never fails the writer''s statement '
  'over a value: values jsonb cannot hold, or too big, become null and are named in "truncated"; '
  'excluded columns of wide rows are never converted; a key over 1 kB goes into delivery_id and '
  'ordering_key as sha256:<hex>. Key and excluded columns follow renames (attnums). Runs with TimeZone '
  'UTC, IntervalStyle postgres, bytea_output hex and extra_float_digits 1 whatever the writer''s '
  'session says (migration 0051), so one row always gives the same key and JSON text. SECURITY DEFINER '
  'with search_path pg_catalog, <procrastinate''s schema>, pg_temp: writers need no rights on '
  'hookline.*; EXECUTE is revoked from PUBLIC so only roles granted it (and the owner) can attach it to '
  'a table. Settings come from the trigger arguments (label, key and excluded column names, max value '
  'bytes, the table''s column names, key and excluded attnums, the table''s oid).';
