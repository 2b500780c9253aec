-- The bulk replay re-queues its events in one UPDATE and defers their jobs in one INSERT, and leaves out
-- an event that a concurrent replay or the payload prune changed instead of failing the whole call.
--
-- 0029's function called hookline.replay(id) once per matching event, in one transaction. Each call's
-- UPDATE of hookline.events fired the statement trigger that keeps hookline.event_status_counts
-- (migration 0031), and each of those upserts rewrote the same two counter rows (the old status's and
-- queued's, in this backend's slot): N versions of one row in one transaction, each found by walking the
-- versions before it. The time grew faster than the count: 16,000 dead letters took 12.8 s (4.6 s with
-- that trigger off), 64,000 took 112 s, holding every replayed event locked until the end. Now the
-- counters move once per call.
--
-- 0029's outer query also read the matching events without locking them, then each hookline.replay(id)
-- locked its event and raised when it was no longer replayable: an event replayed by another session
-- meanwhile (the dashboard's Replay button during `hookline replay --status dead`, two overlapping bulk
-- replays), or whose payload the prune dropped meanwhile, rolled the whole call back. The events are
-- now locked in id order (two bulk replays wait for each other instead of deadlocking), and one that
-- changed while the call waited for its lock is checked again and left out when it no longer matches.
--
-- What each event gets is unchanged: the UPDATE sets what hookline.replay(bigint, ...) sets (migration
-- 0027), and the jobs are deferred in id order with the same arguments, ordering-key lock and priority
-- (so one ordering key's events still run in arrival order).

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
        ORDER BY e.id
        FOR UPDATE OF e
    ) AS m;
    RETURN QUERY
    WITH replayed AS (
        UPDATE hookline.events e
        SET status = 'queued', attempts = 0, infra_failures = 0, finished_at = NULL, started_at = NULL,
            replays = e.replays + 1, replay_applied = '{}',
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
  'Each event is re-queued as hookline.replay(bigint, ...) does it, in one UPDATE for all of them, and '
  'their jobs are deferred in one INSERT, in id order (migration 0040). The events are locked in id '
  'order; one that a concurrent replay or the payload prune changed meanwhile is left out when it no '
  'longer matches. A p_source of digits alone that no event has raises invalid_parameter_value (migration '
  '0029): hookline.replay(''42'') or an untyped parameter resolves to this form, and meant event 42 '
  '(hookline.replay(42::bigint)).';
