-- Batch-friendly enqueueing: one defer call and one wake-up NOTIFY per INSERT statement.
--
-- The web process stores deliveries in batches (one multi-row INSERT per group commit). Row-level
-- triggers would defer one job per row (one INSERT into procrastinate_jobs each) and procrastinate's
-- own row trigger would send two NOTIFYs per job; NOTIFY serialises commits on a global lock. Here:
--   * events_enqueue becomes a statement trigger: one hookline.defer_jobs(...) for all queued rows of
--     the statement, in id order (so ordering-key locks keep arrival order);
--   * procrastinate's per-job NOTIFY trigger is replaced by a statement trigger that sends the same
--     {"type": "job_inserted", "job_id": N} notification once per queue (N = the newest job) and once
--     on procrastinate_any_queue_v1. A worker that hears it fetches jobs until none is left, so one
--     notification per statement wakes it exactly as one per job did.

CREATE FUNCTION hookline.defer_jobs(
    p_task text, p_queues text[], p_args jsonb[], p_locks text[], p_priorities integer[]
)
RETURNS bigint[]
LANGUAGE sql AS $$
    SELECT procrastinate_defer_jobs_v1(array_agg(
        ROW(j.queue, p_task, coalesce(j.priority, 0), j.lock, NULL, j.args, NULL)::procrastinate_job_to_defer_v1
        ORDER BY j.n))
    FROM unnest(p_queues, p_args, p_locks, p_priorities) WITH ORDINALITY AS j (queue, args, lock, priority, n);
$$;
COMMENT ON FUNCTION hookline.defer_jobs(text, text[], jsonb[], text[], integer[]) IS
  'Defers one procrastinate job of task p_task per element of p_args, with the queue, lock and priority at '
  'the same position of p_queues, p_locks and p_priorities, in the caller''s transaction, with one INSERT. '
  'Like hookline.defer_job, the only other place that names procrastinate_defer_jobs_v1.';

DO $$
DECLARE
    pq_schema text;
BEGIN
    SELECT n.nspname INTO STRICT pq_schema
    FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
    WHERE p.proname = 'procrastinate_defer_jobs_v1';
    EXECUTE format('ALTER FUNCTION hookline.defer_jobs(text, text[], jsonb[], text[], integer[]) '
                   'SET search_path = pg_catalog, %I, pg_temp', pq_schema);
END;
$$;

CREATE FUNCTION hookline.enqueue_events() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM hookline.defer_jobs(
        'hookline:process_event',
        array_agg('hookline'::text ORDER BY n.id),
        array_agg(jsonb_build_object('event_id', n.id) ORDER BY n.id),
        array_agg(CASE WHEN n.ordering_key IS NULL THEN NULL
                       ELSE 'hookline:' || n.source || ':' || n.ordering_key END ORDER BY n.id),
        array_agg(n.priority ORDER BY n.id))
    FROM new_rows n
    WHERE n.status = 'queued'
    HAVING count(*) > 0;
    RETURN NULL;
END;
$$;
COMMENT ON FUNCTION hookline.enqueue_events() IS
  'Statement trigger function: defers process_event(event_id) for every queued row the INSERT wrote, '
  'at the row''s priority, in one hookline.defer_jobs call, with each event''s ordering key as procrastinate lock so events '
  'of one entity run one at a time, in order.';

DROP TRIGGER events_enqueue ON hookline.events;
DROP FUNCTION hookline.enqueue_event();
CREATE TRIGGER events_enqueue
    AFTER INSERT ON hookline.events
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION hookline.enqueue_events();
COMMENT ON TRIGGER events_enqueue ON hookline.events IS
  'Enqueues processing in the same transaction as the insert, whoever wrote the rows (web, psql, a '
  'watched table): there is no window in which an accepted event has no job. One defer per statement.';

CREATE FUNCTION hookline.notify_jobs_inserted() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r record;
    newest bigint;
BEGIN
    FOR r IN SELECT j.queue_name, max(j.id) AS job_id FROM new_jobs j WHERE j.status = 'todo'
             GROUP BY j.queue_name LOOP
        PERFORM pg_notify('procrastinate_queue_v1#' || r.queue_name,
                          json_build_object('type', 'job_inserted', 'job_id', r.job_id)::text);
        newest := greatest(newest, r.job_id);
    END LOOP;
    IF newest IS NOT NULL THEN
        PERFORM pg_notify('procrastinate_any_queue_v1',
                          json_build_object('type', 'job_inserted', 'job_id', newest)::text);
    END IF;
    RETURN NULL;
END;
$$;
COMMENT ON FUNCTION hookline.notify_jobs_inserted() IS
  'Statement trigger function replacing procrastinate''s per-job NOTIFY: one job_inserted notification '
  'per queue that got runnable jobs in the statement (and one on procrastinate_any_queue_v1).';

DROP TRIGGER procrastinate_jobs_notify_queue_job_inserted_v1 ON procrastinate_jobs;
CREATE TRIGGER hookline_jobs_inserted_notify
    AFTER INSERT ON procrastinate_jobs
    REFERENCING NEW TABLE AS new_jobs
    FOR EACH STATEMENT EXECUTE FUNCTION hookline.notify_jobs_inserted();
COMMENT ON TRIGGER hookline_jobs_inserted_notify ON procrastinate_jobs IS
  'hookline: wakes workers once per INSERT statement into procrastinate_jobs (replaces procrastinate''s '
  'per-row procrastinate_jobs_notify_queue_job_inserted_v1).';
