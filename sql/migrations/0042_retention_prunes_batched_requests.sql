-- Payload retention drops a batched event's own request too.
--
-- An event of a pipeline with batch = {...} (a micro-batch) or mode = "batch_api" stores its own
-- Messages API request in hookline.batch_items.request: its prompt, the payload fields the model saw.
-- hookline.prune_payloads (migration 0030) replaced the same text in llm_calls.request by
-- {"pruned": true} and left batch_items alone, so every batched event kept its payload's fields for
-- ever, whatever HOOKLINE_PAYLOAD_RETENTION_DAYS said. It now replaces the request of the items of the
-- events it prunes the same way (the column is NOT NULL); the items stay, with their status and error.
-- This migration does the same for the events pruned before it.
-- Nothing reads a finished event's request again: a pruned event cannot be replayed.
--
-- No index led from an event to its items but batch_items_open_idx, which holds only the open ones, so
-- the prune (and the ON DELETE CASCADE of a DBA's DELETE of events) would read the whole table for each
-- batch; batch_items_event_idx does. Plain CREATE INDEX, as in migration 0030: writes to batch_items wait
-- while it reads that table. On a very large table, create the same index by hand with
-- CREATE INDEX CONCURRENTLY before `hookline migrate`; this statement then does nothing.

CREATE INDEX IF NOT EXISTS batch_items_event_idx ON hookline.batch_items (event_id);

COMMENT ON INDEX hookline.batch_items_event_idx IS
  'An event''s batch requests, open or not: what payload retention (hookline.prune_payloads) and a '
  'cascading DELETE of events read.';

-- What retention kept before: the requests of the events it already pruned (finished, body and payload
-- gone) go now, in this migration's transaction (one pass over the batch items, their events by key).
UPDATE hookline.batch_items b
SET request = '{"pruned": true}'::jsonb
FROM hookline.events e
WHERE e.id = b.event_id
  AND e.status IN ('succeeded', 'dead', 'skipped') AND e.body IS NULL AND e.payload IS NULL
  AND b.request <> '{"pruned": true}'::jsonb;

-- 0030's function, with the batch_items update added.
CREATE OR REPLACE FUNCTION hookline.prune_payloads(p_days integer, p_batch integer)
RETURNS integer
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
SET enable_seqscan = off  -- lookups by key, whatever the statistics said when the plan was made
AS $$
    WITH victims AS MATERIALIZED (
        SELECT id, status FROM hookline.events
        WHERE status IN ('succeeded', 'dead', 'skipped')
          AND (body IS NOT NULL OR payload IS NOT NULL)
          AND received_at < now() - make_interval(days => p_days)
        ORDER BY received_at
        LIMIT p_batch
        FOR UPDATE SKIP LOCKED
    ), kept AS MATERIALIZED (  -- what hookline.dead_letters shows as invalid_output_response
        SELECT (SELECT c.id FROM hookline.llm_calls c
                WHERE c.event_id = v.id AND c.status = 'invalid_output'
                ORDER BY c.id DESC LIMIT 1) AS id
        FROM victims v
        WHERE v.status = 'dead'
    ), calls AS (
        UPDATE hookline.llm_calls c
        SET request = '{"pruned": true}'::jsonb,
            response = CASE WHEN c.id = ANY (ARRAY(SELECT id FROM kept)) THEN c.response END
        WHERE c.event_id = ANY (ARRAY(SELECT id FROM victims))
    ), items AS (
        UPDATE hookline.batch_items b
        SET request = '{"pruned": true}'::jsonb
        WHERE b.event_id = ANY (ARRAY(SELECT id FROM victims))
    ), pruned AS (
        UPDATE hookline.events e SET body = NULL, payload = NULL
        WHERE e.id = ANY (ARRAY(SELECT id FROM victims))
        RETURNING 1
    )
    SELECT count(*)::integer FROM pruned;
$$;

COMMENT ON FUNCTION hookline.prune_payloads(integer, integer) IS
  'Payload retention, one batch: the body and payload of up to p_batch terminal events (succeeded, dead, '
  'skipped) that arrived more than p_days days ago, the oldest first, become NULL, and so do the copies '
  'of payload text in their llm_calls (request becomes {"pruned": true}, response NULL) and their '
  'batch_items (request becomes {"pruned": true}, migration 0042). Kept: the event row (deduplication '
  'holds), llm_calls.output, action_runs.result, the batch items'' status and error, and the response of '
  'a dead event''s last invalid_output call (hookline.dead_letters.invalid_output_response). An event '
  'locked elsewhere is left for the next run. Returns how many events it pruned. Called by '
  'worker.runtime.Runtime.retention.';

COMMENT ON COLUMN hookline.batch_items.request IS
  'The Messages API request (params of the batch request). Replaced by {"pruned": true} when retention '
  'prunes its event''s payload (HOOKLINE_PAYLOAD_RETENTION_DAYS).';
