-- A micro-batch's combined call is one Messages API round trip, and every count of model calls now
-- says so.
--
-- A micro-batch (pipeline option batch) asks the model once for N events and stores one
-- hookline.llm_calls row per event, its tokens and cost split among them so that the rows add up to
-- the one call's usage and bill. The calls were counted by row, though: hookline.costs_daily.calls,
-- the model_calls total behind hookline_llm_calls_total (hookline.count_llm_calls), the admin API's
-- /admin/api/cost and `hookline status`'s spend (count(*) in sql/queries) all said N calls for one
-- round trip, while tokens and cost were right.
--
-- Now each row carries calls: how many round trips it counts. 1 for every row, except the parts of a
-- micro-batch's combined answer: the round trip is counted once, on one of its rows (the first that got
-- a valid part, the leader's when its own part is valid; the leader's when no part is), and the other
-- parts count 0. Every count of calls is sum(calls). A failed combined round trip was already one row
-- (under the leader) and counts 1.
--
-- Rows stored before this migration: the parts of one combined answer share its response (the same
-- Messages API message, which names every event's part); each such group of micro_batch rows is set
-- to count once, on its first answered row. Rows whose response retention already dropped cannot be
-- grouped and keep counting one each. The running total behind hookline_llm_calls_total is a counter:
-- what it counted before stays counted.

ALTER TABLE hookline.llm_calls ADD COLUMN calls smallint NOT NULL DEFAULT 1;
ALTER TABLE hookline.llm_calls ADD CONSTRAINT llm_calls_calls_check CHECK (calls IN (0, 1));
COMMENT ON COLUMN hookline.llm_calls.calls IS
  'Messages API round trips this row counts: 1, except the parts of a micro-batch''s combined answer '
  '(route micro_batch:N), whose one round trip is counted on one of its rows (the first with a valid '
  'part, else the leader''s) and 0 on the others. sum(calls) counts each round trip once; count(*) '
  'counts answers (rows).';
COMMENT ON CONSTRAINT llm_calls_calls_check ON hookline.llm_calls IS
  'calls is 0 or 1: a row counts its round trip or is a further part of one counted elsewhere.';

-- the parts of each combined answer stored before: one row counts it (migration 0034, see above)
WITH parts AS (
    SELECT id, pipeline, route, response, status
    FROM hookline.llm_calls
    WHERE route LIKE 'micro\_batch:%' AND status <> 'failed' AND response ? 'id'
), counted AS (
    SELECT DISTINCT ON (pipeline, route, response) id
    FROM parts
    ORDER BY pipeline, route, response, (status IN ('succeeded', 'simulated', 'superseded')) DESC, id
)
UPDATE hookline.llm_calls c SET calls = 0
FROM parts p
WHERE c.id = p.id AND NOT EXISTS (SELECT 1 FROM counted k WHERE k.id = p.id);

CREATE OR REPLACE FUNCTION hookline.count_llm_calls() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET enable_seqscan = off  -- by primary key, whatever the statistics say (migration 0022)
AS $$
BEGIN
    -- one upsert per total, in key order: concurrent statements lock the rows they share in the
    -- same order, so they queue instead of deadlocking
    INSERT INTO hookline.metric_totals AS t (metric, pipeline, model, tenant, kind, status, shard, value)
    SELECT k.metric, '', k.model, k.tenant, k.kind, k.status, (pg_backend_pid() % 8)::smallint, sum(k.v)
    FROM (
        -- round trips, not rows: a micro-batch's further parts count 0 (migration 0034)
        SELECT 'model_calls' AS metric, n.model, '' AS tenant, '' AS kind, n.status, n.calls::numeric AS v
        FROM new_calls n
        WHERE n.calls <> 0
        UNION ALL
        SELECT 'tokens', n.model, coalesce(e.tenant, ''), x.kind, '', x.v::numeric
        FROM new_calls n
        CROSS JOIN LATERAL (SELECT e.tenant FROM hookline.events e WHERE e.id = n.event_id LIMIT 1) AS e
        CROSS JOIN LATERAL (VALUES ('input', n.input_tokens), ('output', n.output_tokens),
                                   ('cache_creation', n.cache_creation_input_tokens),
                                   ('cache_read', n.cache_read_input_tokens)) AS x(kind, v)
        WHERE coalesce(x.v, 0) <> 0
        UNION ALL
        SELECT 'cost_usd', n.model, coalesce(e.tenant, ''), '', '', n.cost_usd
        FROM new_calls n
        CROSS JOIN LATERAL (SELECT e.tenant FROM hookline.events e WHERE e.id = n.event_id LIMIT 1) AS e
        WHERE n.cost_usd IS NOT NULL
    ) AS k
    GROUP BY k.metric, k.model, k.tenant, k.kind, k.status
    ORDER BY k.metric, k.model, k.tenant, k.kind, k.status
    ON CONFLICT (metric, pipeline, model, tenant, kind, status, shard)
    DO UPDATE SET value = t.value + excluded.value;
    RETURN NULL;
END
$$;

COMMENT ON FUNCTION hookline.count_llm_calls() IS
  'Statement trigger function: adds the model calls an INSERT stored to the model_calls, tokens and '
  'cost_usd totals of hookline.metric_totals, one upsert per total (in key order). model_calls adds '
  'each row''s calls (round trips: a micro-batch''s combined call once, migration 0034); tokens and '
  'cost_usd add every row''s share. Each call''s tenant is read from its event by primary key, planned '
  'with sequential scans off (migration 0022).';

CREATE OR REPLACE VIEW hookline.costs_daily AS
SELECT (c.created_at AT TIME ZONE 'UTC')::date AS day,
       e.tenant,
       c.pipeline,
       c.model,
       sum(c.calls) AS calls,
       coalesce(sum(c.input_tokens), 0) AS input_tokens,
       coalesce(sum(c.output_tokens), 0) AS output_tokens,
       coalesce(sum(c.cache_creation_input_tokens), 0) AS cache_creation_input_tokens,
       coalesce(sum(c.cache_read_input_tokens), 0) AS cache_read_input_tokens,
       coalesce(sum(c.cost_usd), 0) AS usd
FROM hookline.llm_calls c
JOIN hookline.events e ON e.id = c.event_id
WHERE c.status <> 'dry_run'
GROUP BY 1, 2, 3, 4;
COMMENT ON VIEW hookline.costs_daily IS
  'Model spend per UTC day, tenant, pipeline and model (every call sent, failed and invalid ones '
  'included): calls counts Messages API round trips (a micro-batch''s combined call once); tokens and '
  'usd add up every row''s share, so they are the bill.';
COMMENT ON COLUMN hookline.costs_daily.calls IS
  'Number of Messages API round trips: sum of llm_calls.calls (a micro-batch''s combined call counts '
  'once, however many events it answered). Simulated calls count, at no cost.';
