-- After a replay, the timeline's queued step counts from the replay, not from the event's arrival.
--
-- hookline.event_timeline's queued step ran from received_at to started_at. A replay sets started_at
-- again (to its own run's first claim) but received_at stays the arrival, so a dead letter replayed a
-- week later showed a week of "wait for a worker" (the README's words for this step). The events table
-- had no record of when a replay queued the event again: hookline.events.replayed_at is that record,
-- set by both forms of hookline.replay (their 0046 bodies, with that one assignment added); the view's
-- queued step starts there when it is set. Events replayed before this migration have no replayed_at
-- and keep the old reading (their replay time was never stored). The finished step stays received to
-- finished, end to end, as documented.
--
-- A column without a default: no rewrite of hookline.events.

ALTER TABLE hookline.events ADD COLUMN replayed_at timestamptz;
COMMENT ON COLUMN hookline.events.replayed_at IS
  'When hookline.replay last queued the event again (NULL: never replayed, or replayed before migration '
  '0053); the event timeline''s queued step counts from it.';

-- ---------------------------------------------------------------------------------------------
-- Both replays record replayed_at
-- ---------------------------------------------------------------------------------------------
-- 0046's function, with replayed_at set in its UPDATE.
CREATE OR REPLACE FUNCTION hookline.replay(p_event_id bigint, p_recompute boolean DEFAULT false, p_force boolean DEFAULT false)
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
    SET status = 'queued', attempts = 0, infra_failures = 0, finished_at = NULL, started_at = NULL,
        replays = replays + 1, replay_applied = '{}', replayed_at = now(),
        dismissed_at = NULL, dismissed_by = NULL, dismissed_reason = NULL,
        detail = 'replay' || CASE WHEN p_recompute THEN ', recompute' ELSE '' END
                          || CASE WHEN p_force THEN ', force actions' ELSE '' END
    WHERE id = p_event_id;
    RETURN hookline.defer_job(
        'hookline', 'hookline:process_event',
        jsonb_build_object('event_id', p_event_id, 'recompute', p_recompute, 'force_actions', p_force),
        CASE WHEN ev.ordering_key IS NULL THEN NULL
             ELSE 'hookline:' || ev.source || ':' || ev.ordering_key END,
        NULL,
        ev.priority);
END;
$$;
COMMENT ON FUNCTION hookline.replay(bigint, boolean, boolean) IS
  'Re-run a finished event (succeeded, dead or skipped) through its pipelines at its priority; returns the '
  'job id. Stored model answers are reused unless p_recompute; actions that already succeeded are not '
  'repeated unless p_force. Both apply to the replay''s first attempt (a retry after a failure reuses what '
  'it did), once per pipeline however often a limit holds the event (hookline.events.replay_applied). The '
  'event starts again with no attempts and no infrastructure failures counted; a dismissed dead letter '
  'is no longer dismissed (migration 0046); replayed_at records when it was queued again (migration 0053).';

-- 0046's function, with replayed_at set in its UPDATE.
CREATE OR REPLACE FUNCTION hookline.replay(
    p_source text DEFAULT NULL, p_event_type text DEFAULT NULL, p_status text DEFAULT NULL,
    p_since timestamptz DEFAULT NULL, p_until timestamptz DEFAULT NULL,
    p_recompute boolean DEFAULT false, p_force boolean DEFAULT false
) RETURNS TABLE (event_id bigint, job_id bigint)
LANGUAGE plpgsql AS $$
DECLARE
    v_ids bigint[];
BEGIN
    IF p_source IS NULL AND p_event_type IS NULL AND p_status IS NULL AND p_since IS NULL AND p_until IS NULL THEN
        RAISE EXCEPTION 'hookline.replay: name at least one of p_source, p_event_type, p_status, p_since, p_until'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_source ~ '^[0-9]+$' AND NOT EXISTS (SELECT 1 FROM hookline.events e WHERE e.source = p_source) THEN
        RAISE EXCEPTION 'hookline.replay: no event has source ''%''; to replay event %, pass its id as a bigint: hookline.replay(%::bigint)',
                        p_source, p_source, p_source
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'A quoted or untyped argument selects the bulk form hookline.replay(p_source text, ...).';
    END IF;
    IF p_status IS NOT NULL AND p_status NOT IN ('succeeded', 'dead', 'skipped') THEN
        RAISE EXCEPTION 'hookline.replay: only finished events (succeeded, dead, skipped) can be replayed, not %', p_status
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- lock in id order; a row another transaction changed is checked against these conditions again
    SELECT coalesce(array_agg(m.id ORDER BY m.id), '{}') INTO v_ids
    FROM (
        SELECT e.id
        FROM hookline.events e
        WHERE e.status IN ('succeeded', 'dead', 'skipped')
          AND (p_status IS NULL OR e.status = p_status)
          AND (p_source IS NULL OR e.source = p_source)
          AND (p_event_type IS NULL OR e.event_type = p_event_type)
          AND (p_since IS NULL OR e.received_at >= p_since)
          AND (p_until IS NULL OR e.received_at < p_until)
          AND (e.payload IS NOT NULL OR e.body IS NOT NULL)
          AND e.dismissed_at IS NULL  -- dismissed: handled by hand; replayed only by its id
        ORDER BY e.id
        FOR UPDATE OF e
    ) AS m;
    RETURN QUERY
    WITH replayed AS (
        UPDATE hookline.events e
        SET status = 'queued', attempts = 0, infra_failures = 0, finished_at = NULL, started_at = NULL,
            replays = e.replays + 1, replay_applied = '{}', replayed_at = now(),
            detail = 'replay' || CASE WHEN p_recompute THEN ', recompute' ELSE '' END
                              || CASE WHEN p_force THEN ', force actions' ELSE '' END
        WHERE e.id = ANY (v_ids)
        RETURNING e.id, e.source, e.ordering_key, e.priority
    ), deferred AS (
        SELECT array_agg(r.id ORDER BY r.id) AS ids,
               hookline.defer_jobs(
                   'hookline:process_event',
                   array_agg('hookline'::text ORDER BY r.id),
                   array_agg(jsonb_build_object('event_id', r.id, 'recompute', p_recompute, 'force_actions', p_force)
                             ORDER BY r.id),
                   array_agg(CASE WHEN r.ordering_key IS NULL THEN NULL
                                  ELSE 'hookline:' || r.source || ':' || r.ordering_key END ORDER BY r.id),
                   array_agg(r.priority ORDER BY r.id)) AS jobs
        FROM replayed r
        HAVING count(*) > 0
    )
    SELECT u.replayed_id, u.deferred_job
    FROM deferred d, unnest(d.ids, d.jobs) AS u (replayed_id, deferred_job)
    ORDER BY u.replayed_id;
END;
$$;

COMMENT ON FUNCTION hookline.replay(text, text, text, timestamptz, timestamptz, boolean, boolean) IS
  'Bulk replay of finished events matching every filter given (source, event type, status, '
  'received_at in [p_since, p_until)); at least one filter is required. Returns (event_id, job_id) rows. '
  'Dismissed dead letters (hookline.dismiss) are left out: replay one by its id. '
  'Each event is re-queued as hookline.replay(bigint, ...) does it, in one UPDATE for all of them, and '
  'their jobs are deferred in one INSERT, in id order (migration 0040). The events are locked in id '
  'order; one that a concurrent replay or the payload prune changed meanwhile is left out when it no '
  'longer matches. A p_source of digits alone that no event has raises invalid_parameter_value (migration '
  '0029): hookline.replay(''42'') or an untyped parameter resolves to this form, and meant event 42 '
  '(hookline.replay(42::bigint)). replayed_at records when each was queued again (migration 0053).';

-- ---------------------------------------------------------------------------------------------
-- The timeline's queued step
-- ---------------------------------------------------------------------------------------------
-- 0046's view, with the queued step from replayed_at when the event was replayed.
CREATE OR REPLACE VIEW hookline.event_timeline AS
SELECT e.id AS event_id, 0 AS step_rank, 'received'::text AS step, e.received_at AS at,
       0::bigint AS duration_ms, NULL::text AS pipeline, NULL::text AS name, NULL::text AS status,
       NULL::integer AS input_tokens, NULL::integer AS output_tokens, NULL::numeric AS cost_usd,
       NULL::bigint AS ref_id, e.source || coalesce(' ' || e.event_type, '') AS detail
FROM hookline.events e
UNION ALL
SELECT e.id, 1, 'queued', coalesce(e.replayed_at, e.received_at),
       (extract(epoch FROM (coalesce(e.started_at, now()) - coalesce(e.replayed_at, e.received_at))) * 1000)::bigint,
       NULL, NULL, NULL, NULL, NULL, NULL, NULL,
       CASE WHEN e.replays > 0 THEN 'replayed ' || e.replays || ' time(s)' END
FROM hookline.events e
UNION ALL
SELECT e.id, 2, 'started', e.started_at,
       (extract(epoch FROM (coalesce(e.finished_at, now()) - e.started_at)) * 1000)::bigint,
       NULL, NULL, NULL, NULL, NULL, NULL, NULL, 'attempt ' || e.attempts
FROM hookline.events e
WHERE e.started_at IS NOT NULL
UNION ALL
SELECT c.event_id, 3, 'model_call', c.created_at - make_interval(secs => coalesce(c.latency_ms, 0) / 1000.0),
       c.latency_ms::bigint, c.pipeline, c.model, c.status, c.input_tokens, c.output_tokens, c.cost_usd,
       c.id, c.error
FROM hookline.llm_calls c
UNION ALL
SELECT a.event_id, 4, 'action', a.started_at,
       (extract(epoch FROM (a.finished_at - a.started_at)) * 1000)::bigint,
       a.pipeline, a.action, a.status, NULL, NULL, NULL, a.id, a.error
FROM hookline.action_runs a
UNION ALL
SELECT e.id, 5, 'finished', e.finished_at,
       (extract(epoch FROM (e.finished_at - e.received_at)) * 1000)::bigint,
       NULL, NULL, e.status, NULL, NULL, NULL, NULL, coalesce(e.last_error, e.detail)
FROM hookline.events e
WHERE e.finished_at IS NOT NULL
UNION ALL
SELECT e.id, 6, 'dismissed', e.dismissed_at, NULL, NULL, e.dismissed_by, NULL, NULL, NULL, NULL, NULL,
       e.dismissed_reason
FROM hookline.events e
WHERE e.dismissed_at IS NOT NULL;

COMMENT ON VIEW hookline.event_timeline IS
  'One row per step of an event''s life: received, queued, started, each model call, each action, '
  'finished, and dismissed (a dead letter dismissed by hookline.dismiss). Read one event with WHERE '
  'event_id = N ORDER BY at, step_rank, ref_id (hookline events show N and the admin API do exactly '
  'that). A replay resets queued (from hookline.events.replayed_at), started and finished to its own run and '
  'clears a dismissal.';
COMMENT ON COLUMN hookline.event_timeline.step_rank IS 'Order of steps that share a timestamp: received 0, queued 1, started 2, model_call 3, action 4, finished 5, dismissed 6.';
COMMENT ON COLUMN hookline.event_timeline.step IS 'received, queued, started, model_call, action, finished or dismissed.';
COMMENT ON COLUMN hookline.event_timeline.name IS 'Model id of a model call, action name of an action, who dismissed a dismissed event.';
COMMENT ON COLUMN hookline.event_timeline.duration_ms IS 'received: 0 (the request itself); queued: wait until a worker started it, from the arrival or, after a replay, from the replay (migration 0053); started: processing until finished; model_call: API latency; action: its run time; finished: received to finished, end to end; dismissed: NULL. Up to now() while still running.';
COMMENT ON COLUMN hookline.event_timeline.detail IS 'A short note: source and type, replays, attempt number, error, the outcome detail, or the reason a dead letter was dismissed.';
