-- The fetch that hands over a lone event's job also claims the event.
--
-- A worker started an event in two round trips: procrastinate's fetch (the job becomes 'doing'), then
-- start_events (the event becomes 'processing', loaded with its stored answers). At 300 events/s on
-- two cores, 6–10 ms (p90) passed between the two, and for a synchronous request the second round trip
-- is part of what its sender waits for. When the fetched job is the only runnable one (no backlog to
-- batch-claim) and the worker has a free slot, the worker's fetch (fetch_job in
-- sql/queries/worker.sql) now claims its event in the same statement; with a backlog, start_events
-- claims the event and its batch as before.
--
-- Both statements claim through the two functions below, so that what a claim does is written once.

CREATE FUNCTION hookline.claim_events(p_ids bigint[])
RETURNS TABLE (
    id bigint, source text, delivery_id text, event_type text, tenant text, ordering_key text,
    occurred_at timestamptz, payload jsonb, attempts integer, received_at timestamptz, request_id text,
    answers jsonb
)
LANGUAGE sql
AS $$
    WITH claimed AS (
        UPDATE hookline.events e
        SET status = 'processing',
            attempts = e.attempts + 1,
            started_at = coalesce(e.started_at, now())
        WHERE e.id = ANY (p_ids)
          AND e.status IN ('queued', 'retrying', 'processing', 'throttled')
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
  'paying twice). An event already terminal returns no row. Called by start_events and by the '
  'worker''s fetch (fetch_job), in sql/queries/worker.sql.';

CREATE FUNCTION hookline.job_pickup_seconds(p_job_id bigint)
RETURNS float8
LANGUAGE sql
STABLE
AS $$
    SELECT extract(epoch FROM (
               coalesce((SELECT max(pe.at) FROM procrastinate_events pe
                         WHERE pe.job_id = pj.id AND pe.type = 'started'), now())
             - greatest(pj.scheduled_at,
                        (SELECT max(pe.at) FROM procrastinate_events pe
                         WHERE pe.job_id = pj.id
                           AND pe.type IN ('deferred', 'deferred_for_retry', 'retried')))))::float8
    FROM procrastinate_jobs pj
    WHERE pj.id = p_job_id
$$;

COMMENT ON FUNCTION hookline.job_pickup_seconds(bigint) IS
  'Seconds from procrastinate job p_job_id becoming runnable (deferred, retried, or its scheduled_at) '
  'to its start (its last started event, or now() when the calling statement is the fetch that starts '
  'it); NULL when procrastinate''s event log lacks its deferral. The worker''s '
  'hookline_pickup_delay_seconds metric.';
