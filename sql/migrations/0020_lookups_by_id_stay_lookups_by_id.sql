-- Two statements that look events up by id no longer read the status index, whose cost grows with the
-- backlog.
--
-- hookline.notify_events_stored (migration 0018; ingest calls it after each batch) asks whether any of
-- the batch's events still waits for a worker: id = ANY (p_ids) AND status = 'queued'. The planner
-- may answer it from events_status_received_idx, which it takes to be selective whenever queued events
-- are rare in its statistics (the usual state) or when the table has none yet (a new deployment before
-- autoanalyze). During a backlog that index holds every waiting event: with 20,000 queued, each call
-- read them all (266 buffers, 2.9 ms), once per ingest batch, exactly when ingest is busiest. It now
-- probes the primary key once per id; the status is read from the row.
--
-- hookline.claim_events (migration 0019; every claim of the worker) filters its UPDATE on the same two
-- columns, and was planned as a BitmapAnd of both indexes: the status side read every waiting event's
-- index entry (20,000 at a backlog of 20,000). Its status test is now an expression, which no index
-- matches, and the function plans with sequential scans off (as 0013 plans the fetch with sorting
-- off): a plan cached while the table was nearly empty would otherwise scan the whole table for each
-- claim once it has grown. The ids alone find the rows, by the primary key.

CREATE OR REPLACE FUNCTION hookline.notify_events_stored(p_ids bigint[]) RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF coalesce(cardinality(p_ids), 0) = 0 THEN
        RETURN 0;
    END IF;
    PERFORM pg_notify('hookline_events', json_build_object(
        'op', 'insert', 'min_id', min(i.id), 'max_id', max(i.id), 'count', count(*))::text)
    FROM unnest(p_ids) AS i(id);
    -- One primary-key probe per id (LIMIT 1 keeps each probe a probe, whatever the statistics say).
    IF NOT EXISTS (
        SELECT 1
        FROM unnest(p_ids) AS i(id)
        CROSS JOIN LATERAL (SELECT e.status FROM hookline.events e WHERE e.id = i.id LIMIT 1) AS e
        WHERE e.status = 'queued'
    ) THEN
        RETURN 1;  -- held by flow control, or already taken by a worker: nobody to wake
    END IF;
    PERFORM pg_notify('procrastinate_queue_v1#hookline', '{"type": "job_inserted"}');
    PERFORM pg_notify('procrastinate_any_queue_v1', '{"type": "job_inserted"}');
    RETURN 3;
END
$$;

COMMENT ON FUNCTION hookline.notify_events_stored(bigint[]) IS
  'The notifications of a committed ingest batch that set hookline.notify = ''after_commit'' '
  '(store_events), sent by the web process right after the commit with the ids it stored: one NOTIFY '
  'hookline_events {"op":"insert","min_id","max_id","count"}, then, if any of those events still waits '
  'for a worker (status queued; one primary-key probe per id, migration 0020), job_inserted on '
  'procrastinate_queue_v1#hookline (the queue hookline.enqueue_events defers to) and on '
  'procrastinate_any_queue_v1. Returns how many it sent.';

CREATE OR REPLACE FUNCTION hookline.claim_events(p_ids bigint[])
RETURNS TABLE (
    id bigint, source text, delivery_id text, event_type text, tenant text, ordering_key text,
    occurred_at timestamptz, payload jsonb, attempts integer, received_at timestamptz, request_id text,
    answers jsonb
)
LANGUAGE sql
SET enable_seqscan = off  -- by id, whatever the statistics say (see above)
AS $$
    WITH claimed AS (
        UPDATE hookline.events e
        SET status = 'processing',
            attempts = e.attempts + 1,
            started_at = coalesce(e.started_at, now())
        WHERE e.id = ANY (p_ids)
          -- an expression, so that no plan reads the status index (every waiting event) for it
          AND (e.status || '') IN ('queued', 'retrying', 'processing', 'throttled')
        RETURNING e.id, e.source, e.delivery_id, e.event_type, e.tenant, e.ordering_key, e.occurred_at,
                  e.payload, e.attempts, e.received_at, e.request_id
    )
    SELECT c.*,
           (SELECT coalesce(jsonb_object_agg(l.pipeline, jsonb_build_object('output', l.output)), '{}'::jsonb)
            FROM hookline.llm_calls l
            WHERE l.event_id = c.id AND l.status = 'succeeded')
    FROM claimed c
$$;

COMMENT ON FUNCTION hookline.claim_events(bigint[]) IS
  'The worker''s claim: the events of p_ids that are not terminal become processing (attempts + 1, '
  'started_at kept from the first claim), returned with the answers already stored for them '
  '(answers: {pipeline: {"output": …}} of their succeeded model calls, which a retry reuses instead of '
  'paying twice). An event already terminal returns no row. Found by id alone, by the primary key: the '
  'status test is an expression no index matches, and the function plans with enable_seqscan off '
  '(migration 0020). Called by start_events and by the worker''s fetch '
  '(fetch_job), in sql/queries/worker.sql.';
