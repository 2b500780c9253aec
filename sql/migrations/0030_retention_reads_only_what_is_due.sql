-- Retention prunes everything due, reads only what is due, keeps what the README says it keeps.
--
-- The maintenance task (every minute) ran two statements of sql/queries/worker.sql at most 20 times
-- each, 500 rows a time: at most 10,000 jobs and 10,000 payloads a minute (~166 events/s); above
-- that both tables grew for ever. And each batch read whole tables: the job prune an anti-join of
-- every finished job against all of procrastinate_events (1.43 s a batch at 1M jobs), the payload
-- prune every terminal event it had pruned before, since those still matched its status and age
-- (1.0-1.26 s and 342,878 buffers on 2M events with 53 due). worker.runtime.Runtime.retention now
-- runs these two functions batch after batch until nothing is due or its time budget is spent.
--
-- hookline.prune_jobs walks procrastinate_jobs by primary key from a cursor (the caller passes the
-- last id of the previous batch) and reads each job's events by job (procrastinate_events_job_id_fkey_v1).
-- It says when the walk can stop: job ids grow with the time a job is deferred, so once a job was
-- deferred within the retention, every later job was too. 1,000 jobs deleted (3,000 job events with
-- them, by ON DELETE CASCADE) in 28 ms on 1M jobs.
--
-- hookline.prune_payloads reads its victims from events_payload_due_idx, which holds only the terminal
-- events whose body or payload is still stored, oldest first; a pruned row leaves it (72 due among
-- 2M events: 8 ms; a batch of 1,000: 39 ms). A new event does not enter the index (it is stored as
-- queued): it enters when the worker finishes it, an update that writes every index of the table
-- anyway (status is indexed), so ingest does not pay for it (store_invalid_event's rows are stored as
-- skipped: those enter at ingest). The prune's own update now writes the table's indexes too (it
-- changes a column of the index's predicate). It keeps what the README and the dead_letters view
-- promise: the response of the call hookline.dead_letters shows as invalid_output_response (a dead
-- event's last invalid_output call) and action_runs.result (a Slack message's channel and ts, a sql
-- action's value); the previous statement dropped both.
--
-- Both are functions planned with sequential scans off (as migrations 0020-0022 and 0024): a plan
-- the worker's connection made while the tables were small (psycopg prepares a statement run five
-- times; Postgres then keeps a generic plan) must stay a lookup by key once they hold millions of
-- rows. tests/integration/test_retention.py counts the rows they read under such plans.
--
-- Plain CREATE INDEX, inside the migration's transaction (a "-- no-transaction" migration runs as a
-- single statement, so CONCURRENTLY could not come with the functions and comments below). It holds
-- a SHARE lock on hookline.events while it builds: ingest and the worker's writes to events wait for
-- it. Measured on 2M events (2.7 GB of heap): 1.2 s. On a much larger table, create the same index
-- by hand with CREATE INDEX CONCURRENTLY before `hookline migrate`; this statement then does nothing.

CREATE INDEX IF NOT EXISTS events_payload_due_idx ON hookline.events (received_at)
    WHERE status IN ('succeeded', 'dead', 'skipped') AND (body IS NOT NULL OR payload IS NOT NULL);

COMMENT ON INDEX hookline.events_payload_due_idx IS
  'Terminal events whose body or payload is still stored, by arrival: what hookline.prune_payloads '
  '(payload retention, every minute) reads. A pruned event leaves it.';

CREATE FUNCTION hookline.prune_jobs(p_after bigint, p_hours integer, p_batch integer)
RETURNS TABLE (deleted integer, last_id bigint, done boolean)
LANGUAGE sql
SET search_path = pg_catalog, public, pg_temp
SET enable_seqscan = off  -- lookups by key, whatever the statistics said when the plan was made
AS $$
    WITH scanned AS MATERIALIZED (
        SELECT j.id, j.status
        FROM procrastinate_jobs j
        WHERE j.id > p_after
        ORDER BY j.id
        LIMIT p_batch
    ), due AS MATERIALIZED (
        SELECT s.id FROM scanned s
        WHERE s.status IN ('succeeded', 'failed', 'cancelled', 'aborted')
          AND coalesce((SELECT max(e.at) FROM procrastinate_events e WHERE e.job_id = s.id), '-infinity')
              <= now() - make_interval(hours => p_hours)
    ), locked AS MATERIALIZED (
        SELECT j.id FROM procrastinate_jobs j
        WHERE j.id = ANY (ARRAY(SELECT id FROM due))
          AND j.status IN ('succeeded', 'failed', 'cancelled', 'aborted')
        FOR UPDATE SKIP LOCKED
    ), gone AS (
        DELETE FROM procrastinate_jobs j
        WHERE j.id = ANY (ARRAY(SELECT id FROM locked))
        RETURNING j.id
    ), walked AS (
        SELECT count(*) AS n, max(id) AS last_id FROM scanned
    )
    SELECT (SELECT count(*) FROM gone)::integer,
           coalesce(w.last_id, p_after),
           w.n < p_batch
           OR coalesce((SELECT min(e.at) FROM procrastinate_events e WHERE e.job_id = w.last_id)
                       > now() - make_interval(hours => p_hours), false)
    FROM walked w;
$$;

COMMENT ON FUNCTION hookline.prune_jobs(bigint, integer, integer) IS
  'Job retention, one batch: among the next p_batch procrastinate jobs by id after p_after, delete the '
  'finished ones (succeeded, failed, cancelled, aborted) with no event in the last p_hours hours (their '
  'events go with them); a job locked elsewhere is left for the next run. Returns deleted, last_id '
  '(the next batch''s p_after) and done: the walk reached the end of the table, or a job deferred within '
  'the retention (every later job was deferred later still). Called by worker.runtime.Runtime.retention.';

CREATE FUNCTION hookline.prune_payloads(p_days integer, p_batch integer)
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
  'of payload text in their llm_calls (request becomes {"pruned": true}, response NULL). Kept: the event '
  'row (deduplication holds), llm_calls.output, action_runs.result, and the response of a dead event''s '
  'last invalid_output call (hookline.dead_letters.invalid_output_response). An event locked elsewhere '
  'is left for the next run. Returns how many events it pruned. Called by worker.runtime.Runtime.retention.';

COMMENT ON COLUMN hookline.events.body IS
  'Raw request body, byte for byte as verified. Set to NULL by retention once a finished event '
  '(succeeded, dead or skipped) arrived more than HOOKLINE_PAYLOAD_RETENTION_DAYS days ago (0: never); '
  'the row stays.';
COMMENT ON COLUMN hookline.events.payload IS
  'The body parsed as JSON (form bodies become an object). Set to NULL by retention with body '
  '(finished events, HOOKLINE_PAYLOAD_RETENTION_DAYS days after arrival; 0: never). A pruned event '
  'cannot be replayed.';
COMMENT ON COLUMN hookline.llm_calls.request IS
  'The Messages API request body as sent (or as it would have been sent, for dry runs). Replaced by '
  '{"pruned": true} when retention prunes its event''s payload (HOOKLINE_PAYLOAD_RETENTION_DAYS).';
COMMENT ON COLUMN hookline.llm_calls.response IS
  'The Messages API response body. Set to NULL when retention prunes its event''s payload '
  '(HOOKLINE_PAYLOAD_RETENTION_DAYS), except the invalid answer a dead letter shows '
  '(hookline.dead_letters.invalid_output_response), which is kept; output is always kept.';
COMMENT ON COLUMN hookline.action_runs.result IS
  'What the action returned (http: status and a body excerpt; slack: channel and ts; email: message_id; '
  'sql: what the function returned). Kept by retention.';
