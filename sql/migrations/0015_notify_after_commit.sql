-- The worker tells listeners about the events it finished right after the commit that stored them,
-- instead of inside it.
--
-- Postgres serialises every transaction that NOTIFYs: PreCommit_Notify takes one lock for the whole
-- cluster's notification queue and holds it until the commit is over, WAL flush included. The
-- worker's group commit (insert_calls) stores answers and finishes events durably, so each of its
-- commits held that lock through an fsync, and every other notifying commit (ingest batches, claims,
-- other worker processes) queued behind it: with three worker processes, seven backends on average
-- were waiting on it.
--
-- insert_calls now sets hookline.notify = 'after_commit' for its own transaction; the two row triggers
-- below stay silent then, and the worker sends the same payloads (statuses first, then answers, as the
-- triggers did) with the notify_after_commit query, in a transaction of its own that does not wait
-- for a WAL flush. Every other writer (ingest, the claim, replays, admin actions, psql) notifies
-- inside its transaction as before.

CREATE OR REPLACE FUNCTION hookline.notify_event_status() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('hookline.notify', true) = 'after_commit' THEN
        RETURN NULL;  -- the writer sends it after its commit (hookline.notify_after_commit's payload)
    END IF;
    PERFORM pg_notify('hookline_events',
        json_build_object('op', 'status', 'id', NEW.id, 'status', NEW.status)::text);
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION hookline.notify_event_status() IS
  'Row trigger: NOTIFY hookline_events {"op":"status","id","status"} when an event''s status changes; '
  'silent in a transaction that set hookline.notify = ''after_commit'' (the worker''s group commit), '
  'whose writer sends the same payload right after its commit.';

CREATE OR REPLACE FUNCTION hookline.notify_answer_stored() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('hookline.notify', true) = 'after_commit' THEN
        RETURN NULL;  -- the writer sends it after its commit
    END IF;
    PERFORM pg_notify('hookline_events',
        json_build_object('op', 'answer', 'id', NEW.event_id, 'pipeline', NEW.pipeline)::text);
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION hookline.notify_answer_stored() IS
  'Row trigger: NOTIFY hookline_events {"op":"answer","id":EVENT_ID,"pipeline"} when a validated model '
  'answer is stored (a synchronous reply can be sent before the actions run); silent in a transaction '
  'that set hookline.notify = ''after_commit'', whose writer sends the same payload right after its commit.';

CREATE FUNCTION hookline.notify_after_commit(
    p_status_ids bigint[], p_statuses text[], p_answer_ids bigint[], p_answer_pipelines text[]
) RETURNS integer
LANGUAGE sql AS $$
    SELECT count(pg_notify('hookline_events', n.payload))::integer
    FROM (
        SELECT json_build_object('op', 'status', 'id', s.id, 'status', s.status)::text AS payload
        FROM unnest(p_status_ids, p_statuses) AS s(id, status)
        UNION ALL
        SELECT json_build_object('op', 'answer', 'id', a.id, 'pipeline', a.pipeline)::text
        FROM unnest(p_answer_ids, p_answer_pipelines) AS a(id, pipeline)
    ) AS n;
$$;
COMMENT ON FUNCTION hookline.notify_after_commit(bigint[], text[], bigint[], text[]) IS
  'NOTIFY hookline_events with the status and answer payloads the row triggers would have sent from a '
  'transaction that set hookline.notify = ''after_commit'' (the worker''s group commit): statuses '
  'first, then answers. Called right after that commit; returns the number of notifications.';
