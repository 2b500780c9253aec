-- Payload retention masks a redacting source's values in what it keeps.
--
-- A source's redact paths (hookline.toml) are masked wherever an event is shown, also where the model's
-- answer, an action's result, an error or the timeline repeats one of their values: the display finds
-- those values in the event's payload. Once retention dropped the payload there was nothing to find
-- them by, and every copy kept (llm_calls.output and error, action_runs.result and error,
-- events.last_error and detail, a dead letter's invalid_output_response) showed in clear from then on.
--
-- The worker (it has the config) now prunes the events of such sources itself, in one transaction per
-- batch: hookline.due_masked_payloads locks the events due and reads them, the worker masks the values
-- their payload hides (app/core/redaction.py, as the display does), and hookline.prune_event_payloads
-- writes those masked texts and prunes the events. hookline.prune_payloads takes the names of those
-- sources and leaves their events alone; the other events go as before, one statement a batch. Called
-- with two arguments (a DBA by hand, a worker of an older release) it prunes every source, as before,
-- without masking. The copies of events pruned before this migration stay as they are: their payload,
-- which told what to mask, is gone.

DROP FUNCTION hookline.prune_payloads(integer, integer);

-- The prune of the events the caller chose and locked (the worker, for a redacting source's events,
-- after masking their copies; hookline.prune_payloads, for its batch, with nothing to mask).
CREATE FUNCTION hookline.prune_event_payloads(
    p_ids bigint[], p_events jsonb DEFAULT '[]', p_calls jsonb DEFAULT '[]', p_actions jsonb DEFAULT '[]')
RETURNS integer
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
SET enable_seqscan = off
AS $$
    UPDATE hookline.events e
    SET last_error = CASE WHEN t.r ? 'last_error' THEN t.r ->> 'last_error' ELSE e.last_error END,
        detail = CASE WHEN t.r ? 'detail' THEN t.r ->> 'detail' ELSE e.detail END
    FROM jsonb_array_elements(p_events) AS t(r)
    WHERE e.id = (t.r ->> 'id')::bigint AND e.id = ANY (p_ids);

    UPDATE hookline.llm_calls c
    SET output = CASE WHEN t.r ? 'output' THEN t.r -> 'output' ELSE c.output END,
        error = CASE WHEN t.r ? 'error' THEN t.r ->> 'error' ELSE c.error END,
        response = CASE WHEN t.r ? 'response' THEN t.r -> 'response' ELSE c.response END
    FROM jsonb_array_elements(p_calls) AS t(r)
    WHERE c.id = (t.r ->> 'id')::bigint AND c.event_id = ANY (p_ids);

    UPDATE hookline.action_runs a
    SET result = CASE WHEN t.r ? 'result' THEN t.r -> 'result' ELSE a.result END,
        error = CASE WHEN t.r ? 'error' THEN t.r ->> 'error' ELSE a.error END
    FROM jsonb_array_elements(p_actions) AS t(r)
    WHERE a.id = (t.r ->> 'id')::bigint AND a.event_id = ANY (p_ids);

    WITH victims AS MATERIALIZED (
        SELECT id, status FROM hookline.events
        WHERE id = ANY (p_ids)
          AND status IN ('succeeded', 'dead', 'skipped')
          AND (body IS NOT NULL OR payload IS NOT NULL)
        FOR UPDATE
    ), kept AS MATERIALIZED (
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

COMMENT ON FUNCTION hookline.prune_event_payloads(bigint[], jsonb, jsonb, jsonb) IS
  'Payload retention of the events p_ids names (those not terminal or already pruned are left alone), '
  'as hookline.prune_payloads prunes its batch, after it wrote the masked texts the caller passes: '
  'p_events, p_calls, p_actions are JSON lists of {"id", and the changed ones of last_error and detail, '
  'output, error and response, result and error} of rows of those events (a key left out keeps its '
  'column). The worker calls it for the events of a source with redact paths, in the transaction where '
  'hookline.due_masked_payloads locked them, with the values their payload hides replaced by '
  '[redacted] (worker.retention, migration 0043). Returns how many events it pruned.';

-- 0042's function, leaving out the events of p_masked's sources: it chooses and locks the batch, and
-- hookline.prune_event_payloads (above) prunes it, with nothing to mask.
CREATE FUNCTION hookline.prune_payloads(p_days integer, p_batch integer, p_masked text[] DEFAULT '{}')
RETURNS integer
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
SET enable_seqscan = off  -- lookups by key, whatever the statistics said when the plan was made
AS $$
    SELECT hookline.prune_event_payloads(ARRAY(
        SELECT id FROM hookline.events
        WHERE status IN ('succeeded', 'dead', 'skipped')
          AND (body IS NOT NULL OR payload IS NOT NULL)
          AND received_at < now() - make_interval(days => p_days)
          AND source <> ALL (p_masked)
        ORDER BY received_at
        LIMIT p_batch
        FOR UPDATE SKIP LOCKED
    ));
$$;

COMMENT ON FUNCTION hookline.prune_payloads(integer, integer, text[]) IS
  'Payload retention, one batch: the body and payload of up to p_batch terminal events (succeeded, dead, '
  'skipped) that arrived more than p_days days ago, the oldest first, and not of a source named in '
  'p_masked, become NULL, and so do the copies of payload text in their llm_calls (request becomes '
  '{"pruned": true}, response NULL) and their batch_items (request becomes {"pruned": true}, migration '
  '0042). Kept: the event row (deduplication holds), llm_calls.output, action_runs.result, the batch '
  'items'' status and error, and the response of a dead event''s last invalid_output call '
  '(hookline.dead_letters.invalid_output_response). An event locked elsewhere is left for the next run. '
  'Returns how many events it pruned. Called by worker.runtime.Runtime.retention with p_masked = the '
  'sources whose redact paths the worker masks first (migration 0043): worker.retention prunes their '
  'events with hookline.due_masked_payloads and hookline.prune_event_payloads.';

-- The events of the masked sources among the next p_batch due, locked, with what is masked in them.
CREATE FUNCTION hookline.due_masked_payloads(p_days integer, p_batch integer, p_masked text[])
RETURNS TABLE (id bigint, source text, payload jsonb, last_error text, detail text, calls jsonb, actions jsonb)
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
SET enable_seqscan = off  -- lookups by key, whatever the statistics said when the plan was made
AS $$
    WITH due AS MATERIALIZED (  -- the next p_batch due, whichever their source: a bounded read
        SELECT d.id FROM hookline.events d
        WHERE d.status IN ('succeeded', 'dead', 'skipped')
          AND (d.body IS NOT NULL OR d.payload IS NOT NULL)
          AND d.received_at < now() - make_interval(days => p_days)
        ORDER BY d.received_at
        LIMIT p_batch
    ), locked AS MATERIALIZED (
        SELECT e.id, e.source, e.payload, e.last_error, e.detail FROM hookline.events e
        WHERE e.id = ANY (ARRAY(SELECT due.id FROM due))
          AND e.source = ANY (p_masked)
          AND e.status IN ('succeeded', 'dead', 'skipped')
          AND (e.body IS NOT NULL OR e.payload IS NOT NULL)
        FOR UPDATE SKIP LOCKED
    )
    SELECT l.id, l.source, l.payload, l.last_error, l.detail,
           coalesce((SELECT jsonb_agg(jsonb_build_object(
                                'id', c.id, 'output', c.output, 'error', c.error,
                                'response', CASE WHEN c.status = 'invalid_output' THEN c.response END)
                            ORDER BY c.id)
                     FROM hookline.llm_calls c WHERE c.event_id = l.id), '[]'::jsonb),
           coalesce((SELECT jsonb_agg(jsonb_build_object('id', a.id, 'result', a.result, 'error', a.error)
                            ORDER BY a.id)
                     FROM hookline.action_runs a WHERE a.event_id = l.id), '[]'::jsonb)
    FROM locked l;
$$;

COMMENT ON FUNCTION hookline.due_masked_payloads(integer, integer, text[]) IS
  'Payload retention of the sources whose redact paths the worker masks (p_masked): those of their '
  'events among the next p_batch due (terminal, body or payload stored, older than p_days days, read '
  'from events_payload_due_idx, the oldest first, whichever their source: hookline.prune_payloads takes '
  'the others first), locked (SKIP LOCKED) for the caller''s transaction, each with its payload (what '
  'finds the values to mask), last_error, detail, its llm_calls (id, output, error, and an invalid '
  'answer''s response) and its action_runs (id, result, error) as JSON lists. Called by worker.retention '
  '(migration 0043), which then calls hookline.prune_event_payloads in the same transaction.';
