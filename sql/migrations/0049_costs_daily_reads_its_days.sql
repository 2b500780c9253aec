-- hookline.costs_daily filtered by day reads that day's model calls, not the whole llm_calls table.
--
-- The view groups hookline.llm_calls by (created_at AT TIME ZONE 'UTC')::date. A filter on its day
-- column (the README's "today's spend" query: WHERE day = (now() AT TIME ZONE 'UTC')::date) becomes a
-- filter on that expression, which llm_calls_created_idx (on created_at) cannot serve: Postgres read
-- every call ever stored to keep one day's (200,000 calls over 60 days: a sequential scan of all of
-- them, 3,330 kept). llm_calls_day_idx holds the calls by that same expression, so a day, or a range
-- of days, reads its own calls.
--
-- Plain CREATE INDEX, as in migrations 0030, 0041 and 0044: it holds a SHARE lock on hookline.llm_calls
-- while it reads the table (the worker's writes of model calls wait; well under a second per million
-- calls). On a much larger table, create the same index by hand with CREATE INDEX CONCURRENTLY before
-- `hookline migrate`; this statement then does nothing.

CREATE INDEX IF NOT EXISTS llm_calls_day_idx ON hookline.llm_calls (((created_at AT TIME ZONE 'UTC')::date));

COMMENT ON INDEX hookline.llm_calls_day_idx IS
  'Model calls by UTC day, the expression hookline.costs_daily groups by: what a filter on the view''s '
  'day column reads (today''s spend), instead of every call.';
