-- Ingest's group commit tells listeners about the rows it stored right after its commit, instead of
-- inside it.
--
-- Postgres serialises every transaction that NOTIFYs: the committing backend holds the cluster's
-- notification queue lock until its commit is over, WAL flush included (see 0015). Each ingest
-- batch (store_events) NOTIFYs twice from its statement triggers: hookline_events {"op":"insert"} and
-- procrastinate's job_inserted wake-up. So concurrent batches of one web process, of several web
-- processes, and the worker's claims took turns through one fsync each, where Postgres would
-- otherwise flush their commits together.
--
-- store_events now sets hookline.notify = 'held' for its own transaction. The two statement triggers
-- then build the same payloads as before but, instead of sending them, append them to the session
-- setting hookline.held_notifications (a JSON array of [channel, payload] pairs). A session setting
-- changed in a transaction keeps the change only if the transaction commits: a batch rolled back,
-- or a row rolled back to its savepoint, leaves nothing held. Right after the commit the web process
-- sends what is held with hookline.send_held_notifications(), on the same connection, in a
-- transaction that does not wait for a WAL flush. Every other writer of hookline.events and
-- procrastinate_jobs (replays, schedules, watched tables, psql) notifies inside its transaction as
-- before, and the worker's group commit keeps hookline.notify = 'after_commit' (0015).

CREATE FUNCTION hookline.notify_or_hold(p_channel text, p_payload text) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF current_setting('hookline.notify', true) = 'held' THEN
        PERFORM set_config('hookline.held_notifications',
            (coalesce(nullif(current_setting('hookline.held_notifications', true), ''), '[]')::jsonb
             || jsonb_build_array(jsonb_build_array(p_channel, p_payload)))::text,
            false);
    ELSE
        PERFORM pg_notify(p_channel, p_payload);
    END IF;
END
$$;
COMMENT ON FUNCTION hookline.notify_or_hold(text, text) IS
  'pg_notify(p_channel, p_payload), unless the transaction set hookline.notify = ''held'' (ingest''s '
  'group commit): then the pair is appended to the session setting hookline.held_notifications, kept '
  'only if the transaction commits, for hookline.send_held_notifications() to send after the commit.';

CREATE FUNCTION hookline.send_held_notifications() RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    held jsonb := coalesce(nullif(current_setting('hookline.held_notifications', true), ''), '[]')::jsonb;
    pair jsonb;
    sent integer := 0;
BEGIN
    PERFORM set_config('hookline.held_notifications', '', false);
    FOR pair IN SELECT value FROM jsonb_array_elements(held) LOOP
        PERFORM pg_notify(pair ->> 0, pair ->> 1);
        sent := sent + 1;
    END LOOP;
    RETURN sent;
END
$$;
COMMENT ON FUNCTION hookline.send_held_notifications() IS
  'Sends, in order, the notifications this session''s committed transactions held back '
  '(hookline.notify_or_hold), empties the list and returns how many it sent. The web process calls it '
  'right after each ingest batch''s commit, on the connection that wrote the batch.';

CREATE OR REPLACE FUNCTION hookline.notify_events_inserted() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM hookline.notify_or_hold('hookline_events', json_build_object(
        'op', 'insert', 'min_id', min(n.id), 'max_id', max(n.id), 'count', count(*))::text)
    FROM new_rows n
    HAVING count(*) > 0;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION hookline.notify_events_inserted() IS
  'Statement trigger: one NOTIFY hookline_events {"op":"insert","min_id","max_id","count"} per INSERT '
  'statement into hookline.events, however many rows it wrote; held until after the commit when the '
  'transaction set hookline.notify = ''held'' (hookline.notify_or_hold).';

CREATE OR REPLACE FUNCTION hookline.notify_jobs_inserted() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r record;
    newest bigint;
BEGIN
    FOR r IN SELECT j.queue_name, max(j.id) AS job_id FROM new_jobs j WHERE j.status = 'todo'
             GROUP BY j.queue_name LOOP
        PERFORM hookline.notify_or_hold('procrastinate_queue_v1#' || r.queue_name,
                                        json_build_object('type', 'job_inserted', 'job_id', r.job_id)::text);
        newest := greatest(newest, r.job_id);
    END LOOP;
    IF newest IS NOT NULL THEN
        PERFORM hookline.notify_or_hold('procrastinate_any_queue_v1',
                                        json_build_object('type', 'job_inserted', 'job_id', newest)::text);
    END IF;
    RETURN NULL;
END;
$$;
COMMENT ON FUNCTION hookline.notify_jobs_inserted() IS
  'Statement trigger function replacing procrastinate''s per-job NOTIFY: one job_inserted notification '
  'per queue that got runnable jobs in the statement (and one on procrastinate_any_queue_v1); held '
  'until after the commit when the transaction set hookline.notify = ''held'' (hookline.notify_or_hold).';
