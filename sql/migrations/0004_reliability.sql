-- Nothing lost, nothing twice: dead letters, replay, superseded answers, and the lock-chain wake-up.

-- A recomputed answer supersedes the stored one instead of being refused by llm_calls_one_success_idx.
ALTER TABLE hookline.llm_calls DROP CONSTRAINT llm_calls_status_check;
ALTER TABLE hookline.llm_calls ADD CONSTRAINT llm_calls_status_check
    CHECK (status IN ('succeeded', 'invalid_output', 'failed', 'dry_run', 'superseded'));
COMMENT ON CONSTRAINT llm_calls_status_check ON hookline.llm_calls IS
  'Allowed call statuses; superseded = a succeeded answer replaced by a replay with recompute.';
COMMENT ON COLUMN hookline.llm_calls.status IS
  'succeeded (validated output), invalid_output (answer failed the schema), failed (API error), '
  'dry_run (not sent), superseded (a later replay recomputed it).';

ALTER TABLE hookline.events ADD COLUMN replays integer NOT NULL DEFAULT 0;
COMMENT ON COLUMN hookline.events.replays IS 'How many times the event was replayed (hookline.replay).';

-- ---------------------------------------------------------------------------------------------
-- Dead letters
-- ---------------------------------------------------------------------------------------------
CREATE VIEW hookline.dead_letters AS
SELECT e.id AS event_id,
       e.source,
       e.event_type,
       e.delivery_id,
       e.attempts,
       e.last_error AS error,
       e.detail,
       e.received_at,
       e.finished_at AS died_at,
       bad.pipeline AS invalid_output_pipeline,
       bad.response AS invalid_output_response,
       bad.error AS invalid_output_error
FROM hookline.events e
LEFT JOIN LATERAL (
    SELECT c.pipeline, c.response, c.error
    FROM hookline.llm_calls c
    WHERE c.event_id = e.id AND c.status = 'invalid_output'
    ORDER BY c.id DESC
    LIMIT 1
) bad ON true
WHERE e.status = 'dead';

COMMENT ON VIEW hookline.dead_letters IS
  'Events that will not be retried again: the last error, how many attempts were made and the last '
  'answer that failed the output schema, if any. Fix the cause, then SELECT hookline.replay(event_id).';
COMMENT ON COLUMN hookline.dead_letters.event_id IS 'hookline.events.id.';
COMMENT ON COLUMN hookline.dead_letters.source IS 'Source name.';
COMMENT ON COLUMN hookline.dead_letters.event_type IS 'Event type.';
COMMENT ON COLUMN hookline.dead_letters.delivery_id IS 'The sender''s delivery id.';
COMMENT ON COLUMN hookline.dead_letters.attempts IS 'Attempts made before giving up.';
COMMENT ON COLUMN hookline.dead_letters.error IS 'The error of the last attempt.';
COMMENT ON COLUMN hookline.dead_letters.detail IS 'Why it was given up (permanent error, or attempts exhausted).';
COMMENT ON COLUMN hookline.dead_letters.received_at IS 'When the delivery arrived.';
COMMENT ON COLUMN hookline.dead_letters.died_at IS 'When it was declared dead.';
COMMENT ON COLUMN hookline.dead_letters.invalid_output_pipeline IS 'Pipeline whose model answer failed its schema, if that is why.';
COMMENT ON COLUMN hookline.dead_letters.invalid_output_response IS 'That invalid answer, as the API returned it.';
COMMENT ON COLUMN hookline.dead_letters.invalid_output_error IS 'How it failed the schema.';

-- ---------------------------------------------------------------------------------------------
-- Replay
-- ---------------------------------------------------------------------------------------------
CREATE FUNCTION hookline.replay(p_event_id bigint, p_recompute boolean DEFAULT false, p_force boolean DEFAULT false)
RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    ev hookline.events%ROWTYPE;
BEGIN
    SELECT * INTO ev FROM hookline.events WHERE id = p_event_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'hookline.replay: no event with id %', p_event_id USING ERRCODE = 'no_data_found';
    END IF;
    IF ev.status NOT IN ('succeeded', 'dead', 'skipped') THEN
        RAISE EXCEPTION 'hookline.replay: event % is %, not finished; it will be processed anyway', p_event_id, ev.status
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    IF ev.payload IS NULL AND ev.body IS NULL THEN
        RAISE EXCEPTION 'hookline.replay: event %''s payload was pruned by retention', p_event_id
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    UPDATE hookline.events
    SET status = 'queued', attempts = 0, finished_at = NULL, started_at = NULL, replays = replays + 1,
        detail = 'replay' || CASE WHEN p_recompute THEN ', recompute' ELSE '' END
                          || CASE WHEN p_force THEN ', force actions' ELSE '' END
    WHERE id = p_event_id;
    RETURN hookline.defer_job(
        'hookline', 'hookline:process_event',
        jsonb_build_object('event_id', p_event_id, 'recompute', p_recompute, 'force_actions', p_force),
        CASE WHEN ev.ordering_key IS NULL THEN NULL
             ELSE 'hookline:' || ev.source || ':' || ev.ordering_key END);
END;
$$;
COMMENT ON FUNCTION hookline.replay(bigint, boolean, boolean) IS
  'Re-run a finished event (succeeded, dead or skipped) through its pipelines; returns the job id. '
  'Stored model answers are reused unless p_recompute; actions that already succeeded are not '
  'repeated unless p_force.';

CREATE FUNCTION hookline.replay(
    p_source text DEFAULT NULL, p_event_type text DEFAULT NULL, p_status text DEFAULT NULL,
    p_since timestamptz DEFAULT NULL, p_until timestamptz DEFAULT NULL,
    p_recompute boolean DEFAULT false, p_force boolean DEFAULT false
) RETURNS TABLE (event_id bigint, job_id bigint)
LANGUAGE plpgsql AS $$
BEGIN
    IF p_source IS NULL AND p_event_type IS NULL AND p_status IS NULL AND p_since IS NULL AND p_until IS NULL THEN
        RAISE EXCEPTION 'hookline.replay: name at least one of p_source, p_event_type, p_status, p_since, p_until'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_status IS NOT NULL AND p_status NOT IN ('succeeded', 'dead', 'skipped') THEN
        RAISE EXCEPTION 'hookline.replay: only finished events (succeeded, dead, skipped) can be replayed, not %', p_status
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN QUERY
    SELECT e.id, hookline.replay(e.id, p_recompute, p_force)
    FROM hookline.events e
    WHERE e.status IN ('succeeded', 'dead', 'skipped')
      AND (p_status IS NULL OR e.status = p_status)
      AND (p_source IS NULL OR e.source = p_source)
      AND (p_event_type IS NULL OR e.event_type = p_event_type)
      AND (p_since IS NULL OR e.received_at >= p_since)
      AND (p_until IS NULL OR e.received_at < p_until)
      AND (e.payload IS NOT NULL OR e.body IS NOT NULL)
    ORDER BY e.id;
END;
$$;
COMMENT ON FUNCTION hookline.replay(text, text, text, timestamptz, timestamptz, boolean, boolean) IS
  'Bulk replay of finished events matching every filter given (source, event type, status, '
  'received_at in [p_since, p_until)); at least one filter is required. Returns (event_id, job_id) rows.';

-- ---------------------------------------------------------------------------------------------
-- Lock-chain wake-up. procrastinate notifies workers only when a job is INSERTed: when a job that
-- holds a lock finishes, the next job of its chain waits for the next poll, and a retried job
-- (UPDATE back to todo) wakes no one. This trigger sends the same job_inserted notification then.
-- ---------------------------------------------------------------------------------------------
CREATE FUNCTION hookline.notify_job_runnable() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    payload text := json_build_object('type', 'job_inserted', 'job_id', NEW.id)::text;
BEGIN
    PERFORM pg_notify('procrastinate_queue_v1#' || NEW.queue_name, payload);
    PERFORM pg_notify('procrastinate_any_queue_v1', payload);
    RETURN NULL;
END;
$$;
COMMENT ON FUNCTION hookline.notify_job_runnable() IS
  'Trigger function: wakes workers (procrastinate job_inserted notification) when a locked job '
  'finishes, so the next job of the chain starts at once, and when a job goes back to todo.';

CREATE TRIGGER hookline_notify_lock_released
    AFTER UPDATE OF status ON procrastinate_jobs
    FOR EACH ROW
    WHEN ((OLD.status = 'doing' AND NEW.status <> 'doing' AND NEW.lock IS NOT NULL)
          OR (NEW.status = 'todo' AND OLD.status <> 'todo'
              AND (NEW.scheduled_at IS NULL OR NEW.scheduled_at <= now())))
    EXECUTE FUNCTION hookline.notify_job_runnable();
COMMENT ON TRIGGER hookline_notify_lock_released ON procrastinate_jobs IS
  'hookline: notify workers when a lock is released or a job is immediately runnable again.';

-- ---------------------------------------------------------------------------------------------
-- hookline.defer_job names procrastinate's function unqualified; pin its search_path to the schema
-- procrastinate was installed in, so an INSERT into hookline.events works whatever the writer's
-- search_path is (a DBA's psql, a business role).
-- ---------------------------------------------------------------------------------------------
DO $$
DECLARE
    pq_schema text;
BEGIN
    SELECT n.nspname INTO STRICT pq_schema
    FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
    WHERE p.proname = 'procrastinate_defer_jobs_v1';
    EXECUTE format('ALTER FUNCTION hookline.defer_job(text, text, jsonb, text, text, integer, timestamptz) '
                   'SET search_path = pg_catalog, %I, pg_temp', pq_schema);
END;
$$;
