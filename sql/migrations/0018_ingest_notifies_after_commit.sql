-- Ingest's group commit wakes listeners right after its commit, instead of inside it.
--
-- Postgres serialises every transaction that NOTIFYs: PreCommit_Notify takes one lock for the whole
-- cluster's notification queue and holds it until the commit is over, WAL flush included (see 0015).
-- Each ingest batch (store_events) is a durable commit that NOTIFYs twice from its statement
-- triggers: hookline_events {"op":"insert"} and procrastinate's job_inserted wake-up. So every other
-- notifying transaction waited behind an ingest fsync: the worker's claim (its status NOTIFY, an
-- asynchronous commit otherwise), its after-commit notifications, other web processes' batches. With
-- ingest at 300 requests/s, each of those statements took 4–11 ms at the median, and one worker's ten
-- slots could no longer keep up.
--
-- store_events now sets hookline.notify = 'after_commit' for its own transaction (0015's mode, which
-- the worker's insert_calls sets), unless the batch holds a synchronous request: its caller is waiting
-- for the worker, which should wake at once. In that mode the two statement triggers below stay silent
-- and the web process calls hookline.notify_events_stored with the ids it stored, right after the
-- commit, in a transaction of its own that does not wait for a WAL flush. It needs nothing from the
-- session that wrote the rows (a pgbouncer in transaction mode may send it on another connection). If
-- the web process dies in between, the events are stored all the same and workers find their jobs at
-- their next poll. Every other writer (replays, schedules, watched tables, psql) notifies inside its
-- transaction as before; insert_calls writes no events and no jobs.

CREATE OR REPLACE FUNCTION hookline.notify_events_inserted() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('hookline.notify', true) IS DISTINCT FROM 'after_commit' THEN
        PERFORM pg_notify('hookline_events', json_build_object(
            'op', 'insert', 'min_id', min(n.id), 'max_id', max(n.id), 'count', count(*))::text)
        FROM new_rows n
        HAVING count(*) > 0;
    END IF;  -- else the writer calls hookline.notify_events_stored right after its commit
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION hookline.notify_events_inserted() IS
  'Statement trigger: one NOTIFY hookline_events {"op":"insert","min_id","max_id","count"} per INSERT '
  'statement into hookline.events, however many rows it wrote; silent in a transaction that set '
  'hookline.notify = ''after_commit'' (ingest''s group commit), whose writer calls '
  'hookline.notify_events_stored right after its commit.';

CREATE OR REPLACE FUNCTION hookline.notify_jobs_inserted() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r record;
    newest bigint;
BEGIN
    IF current_setting('hookline.notify', true) = 'after_commit' THEN
        RETURN NULL;  -- the writer calls hookline.notify_events_stored right after its commit
    END IF;
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
  'per queue that got runnable jobs in the statement (and one on procrastinate_any_queue_v1); silent in '
  'a transaction that set hookline.notify = ''after_commit'' (ingest''s group commit), whose writer '
  'calls hookline.notify_events_stored right after its commit.';

CREATE FUNCTION hookline.notify_events_stored(p_ids bigint[]) RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF coalesce(cardinality(p_ids), 0) = 0 THEN
        RETURN 0;
    END IF;
    PERFORM pg_notify('hookline_events', json_build_object(
        'op', 'insert', 'min_id', min(i.id), 'max_id', max(i.id), 'count', count(*))::text)
    FROM unnest(p_ids) AS i(id);
    IF NOT EXISTS (SELECT 1 FROM hookline.events e WHERE e.id = ANY (p_ids) AND e.status = 'queued') THEN
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
  'for a worker (status queued), job_inserted on procrastinate_queue_v1#hookline (the queue '
  'hookline.enqueue_events defers to) and on procrastinate_any_queue_v1. Returns how many it sent.';
