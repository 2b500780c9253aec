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
-- for a WAL flush. Both build their payloads with one function, hookline.notify_event_changes. Every other writer (ingest, the claim, replays, admin actions, psql) notifies
-- inside its transaction as before.

CREATE FUNCTION hookline.notify_event_changes(
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
COMMENT ON FUNCTION hookline.notify_event_changes(bigint[], text[], bigint[], text[]) IS
  'NOTIFY hookline_events {"op":"status","id","status"} for each (p_status_ids, p_statuses) pair, then '
  '{"op":"answer","id":EVENT_ID,"pipeline"} for each (p_answer_ids, p_answer_pipelines) pair; returns '
  'the number of notifications. The one place these payloads are built: the row triggers call it inside '
  'their transaction, the worker right after a group commit that set hookline.notify = ''after_commit''.';

CREATE OR REPLACE FUNCTION hookline.notify_event_status() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('hookline.notify', true) IS DISTINCT FROM 'after_commit' THEN
        PERFORM hookline.notify_event_changes(ARRAY[NEW.id], ARRAY[NEW.status], '{}', '{}');
    END IF;  -- else the writer sends it right after its commit
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
    IF current_setting('hookline.notify', true) IS DISTINCT FROM 'after_commit' THEN
        PERFORM hookline.notify_event_changes('{}', '{}', ARRAY[NEW.event_id], ARRAY[NEW.pipeline]);
    END IF;  -- else the writer sends it right after its commit
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION hookline.notify_answer_stored() IS
  'Row trigger: NOTIFY hookline_events {"op":"answer","id":EVENT_ID,"pipeline"} when a validated model '
  'answer is stored (a synchronous reply can be sent before the actions run); silent in a transaction '
  'that set hookline.notify = ''after_commit'', whose writer sends the same payload right after its commit.';
