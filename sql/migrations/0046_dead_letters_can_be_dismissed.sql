-- A dead letter can be dismissed: handled by hand (the customer refunded, the ticket answered), or past
-- replaying (retention dropped its payload), it leaves hookline.dead_letters and the dead-letter counts
-- without being replayed.
--
-- Until now a dead letter left hookline.dead_letters only by a replay, and a pruned one could never be
-- replayed: it stayed in the view, in `hookline status`, on the dashboard and in the
-- hookline_dead_letters metric for good (an alert on that metric never cleared). The event keeps its
-- status (dead: the status set is a contract); hookline.events.dismissed_at marks it, with who and why.
-- hookline.dismiss(...) dismisses; a replay (either form) clears the mark, since the event is no longer
-- dead; the bulk replay leaves dismissed events out (one handled by hand must not run again because it
-- matched a filter: replay it by its id).
--
-- The dead letters' index (migration 0041) now holds the undismissed ones only, so a page of the list
-- still reads its own rows however many dismissed ones lie between. The undismissed count stays exact
-- without a scan: hookline.dismissed_counts counts the dismissed dead events, kept by the statement
-- triggers that keep hookline.event_status_counts (migration 0031), in the same slots and order, and
-- hookline.dead_letter_counts subtracts it from the dead count.
--
-- Plain CREATE INDEX, as in migrations 0030 and 0041: writes to hookline.events wait while it reads the
-- dead events (about 1 s per 2 million events). On a much larger table, create the same index by hand
-- with CREATE INDEX CONCURRENTLY before `hookline migrate`; this statement then does nothing.

ALTER TABLE hookline.events
    ADD COLUMN dismissed_at timestamptz,
    ADD COLUMN dismissed_by text,
    ADD COLUMN dismissed_reason text;
COMMENT ON COLUMN hookline.events.dismissed_at IS
  'When a dead event was dismissed (hookline.dismiss): handled by hand or past replaying, it is left out '
  'of hookline.dead_letters and the dead-letter counts; its status stays dead. NULL: not dismissed. A '
  'replay clears it.';
COMMENT ON COLUMN hookline.events.dismissed_by IS
  'Who dismissed it: the admin API, the dashboard, hookline dismiss (with the operating-system user), or '
  'the database role that called hookline.dismiss. NULL when not dismissed.';
COMMENT ON COLUMN hookline.events.dismissed_reason IS 'Why it was dismissed, as given (may be NULL).';

DROP INDEX IF EXISTS hookline.events_dead_idx;
CREATE INDEX IF NOT EXISTS events_dead_letters_idx ON hookline.events (id)
    WHERE status = 'dead' AND dismissed_at IS NULL;
COMMENT ON INDEX hookline.events_dead_letters_idx IS
  'The dead letters (status dead, not dismissed) by id: what the admin API''s and the dashboard''s list '
  'of hookline.dead_letters reads, newest first, a page at a time. An event leaves it when it is '
  'replayed or dismissed. Replaces events_dead_idx (migration 0041), which held the dismissed ones too.';

-- 0004's view, without the dismissed events.
CREATE OR REPLACE VIEW hookline.dead_letters AS
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
WHERE e.status = 'dead' AND e.dismissed_at IS NULL;

COMMENT ON VIEW hookline.dead_letters IS
  'Events that will not be retried again and that nobody dismissed: the last error, how many attempts '
  'were made and the last answer that failed the output schema, if any. Fix the cause, then SELECT '
  'hookline.replay(event_id); or, handled by hand or pruned, SELECT * FROM hookline.dismiss(ARRAY[event_id]). '
  'Dismissed dead events: hookline.events WHERE status = ''dead'' AND dismissed_at IS NOT NULL.';

-- ---------------------------------------------------------------------------------------------
-- The dismissed dead events, counted by the statement triggers of hookline.events
-- ---------------------------------------------------------------------------------------------
CREATE TABLE hookline.dismissed_counts (
    shard smallint NOT NULL,
    n bigint NOT NULL,
    CONSTRAINT dismissed_counts_pkey PRIMARY KEY (shard)
);
COMMENT ON TABLE hookline.dismissed_counts IS
  'Dead events that were dismissed (status dead, dismissed_at set), kept by the statement triggers of '
  'hookline.events in the writing transaction, in slots summed on read: read hookline.dead_letter_counts.';
COMMENT ON COLUMN hookline.dismissed_counts.shard IS
  'The slot: pg_backend_pid() % 16 of the writing backend (0 for the initial count), as in '
  'hookline.event_status_counts.';
COMMENT ON COLUMN hookline.dismissed_counts.n IS
  'This slot''s share of the count (may be negative: a slot counts what its writers changed).';
COMMENT ON CONSTRAINT dismissed_counts_pkey ON hookline.dismissed_counts IS
  'One row per slot (the upserts'' conflict target).';

CREATE VIEW hookline.dead_letter_counts AS
SELECT coalesce((SELECT s.n FROM hookline.events_by_status s WHERE s.status = 'dead'), 0)
       - coalesce((SELECT sum(d.n) FROM hookline.dismissed_counts d), 0)::bigint AS open,
       coalesce((SELECT sum(d.n) FROM hookline.dismissed_counts d), 0)::bigint AS dismissed;
COMMENT ON VIEW hookline.dead_letter_counts IS
  'Dead events, exact and without reading the events table: open (the rows of hookline.dead_letters; '
  'what hookline status, the dashboard and the hookline_dead_letters metric show) and dismissed.';
COMMENT ON COLUMN hookline.dead_letter_counts.open IS 'Dead events not dismissed: the dead letters.';
COMMENT ON COLUMN hookline.dead_letter_counts.dismissed IS 'Dead events dismissed (hookline.dismiss).';

-- 0031's trigger functions, each also moving the dismissed count, after the status counts (every
-- statement takes the rows in the same order: no deadlock between two that share a slot).
CREATE OR REPLACE FUNCTION hookline.count_events_inserted() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    INSERT INTO hookline.event_status_counts AS t (status, shard, n)
    SELECT r.status, (pg_backend_pid() % 16)::smallint, count(*)
    FROM new_events r
    GROUP BY r.status
    ORDER BY r.status  -- statements sharing a slot lock its rows in the same order
    ON CONFLICT (status, shard) DO UPDATE SET n = t.n + excluded.n;
    INSERT INTO hookline.dismissed_counts AS t (shard, n)
    SELECT (pg_backend_pid() % 16)::smallint, count(*)
    FROM new_events r
    WHERE r.status = 'dead' AND r.dismissed_at IS NOT NULL
    HAVING count(*) <> 0
    ON CONFLICT (shard) DO UPDATE SET n = t.n + excluded.n;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION hookline.count_events_inserted() IS
  'Statement trigger function: adds the events an INSERT stored to hookline.event_status_counts, one '
  'upsert per status (in status order), then the dismissed dead ones to hookline.dismissed_counts.';

CREATE OR REPLACE FUNCTION hookline.count_events_updated() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    INSERT INTO hookline.event_status_counts AS t (status, shard, n)
    SELECT d.status, (pg_backend_pid() % 16)::smallint, sum(d.n)
    FROM (SELECT r.status, 1 AS n FROM new_events r
          UNION ALL
          SELECT r.status, -1 FROM old_events r) AS d
    GROUP BY d.status
    HAVING sum(d.n) <> 0  -- an UPDATE that changes no status writes nothing
    ORDER BY d.status
    ON CONFLICT (status, shard) DO UPDATE SET n = t.n + excluded.n;
    INSERT INTO hookline.dismissed_counts AS t (shard, n)
    SELECT (pg_backend_pid() % 16)::smallint, sum(d.n)
    FROM (SELECT 1 AS n FROM new_events r WHERE r.status = 'dead' AND r.dismissed_at IS NOT NULL
          UNION ALL
          SELECT -1 FROM old_events r WHERE r.status = 'dead' AND r.dismissed_at IS NOT NULL) AS d
    HAVING coalesce(sum(d.n), 0) <> 0  -- nothing dismissed or un-dismissed: nothing written
    ON CONFLICT (shard) DO UPDATE SET n = t.n + excluded.n;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION hookline.count_events_updated() IS
  'Statement trigger function: moves the events an UPDATE changed the status of between the counts of '
  'hookline.event_status_counts, one upsert per status whose count changed (in status order), then '
  'hookline.dismissed_counts by the dead events it dismissed or took out of the dismissed (a replay).';

CREATE OR REPLACE FUNCTION hookline.count_events_deleted() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    INSERT INTO hookline.event_status_counts AS t (status, shard, n)
    SELECT r.status, (pg_backend_pid() % 16)::smallint, -count(*)
    FROM old_events r
    GROUP BY r.status
    ORDER BY r.status
    ON CONFLICT (status, shard) DO UPDATE SET n = t.n + excluded.n;
    INSERT INTO hookline.dismissed_counts AS t (shard, n)
    SELECT (pg_backend_pid() % 16)::smallint, -count(*)
    FROM old_events r
    WHERE r.status = 'dead' AND r.dismissed_at IS NOT NULL
    HAVING count(*) <> 0
    ON CONFLICT (shard) DO UPDATE SET n = t.n + excluded.n;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION hookline.count_events_deleted() IS
  'Statement trigger function: takes the events a DELETE removed off hookline.event_status_counts, one '
  'upsert per status (in status order), and the dismissed dead ones off hookline.dismissed_counts.';

CREATE OR REPLACE FUNCTION hookline.count_events_truncated() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    DELETE FROM hookline.event_status_counts;
    DELETE FROM hookline.dismissed_counts;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION hookline.count_events_truncated() IS
  'Statement trigger function: a TRUNCATE of hookline.events empties hookline.event_status_counts and '
  'hookline.dismissed_counts.';

CREATE OR REPLACE FUNCTION hookline.recount_events_by_status() RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    LOCK TABLE hookline.events IN SHARE MODE;  -- writers wait until this transaction ends; readers do not
    DELETE FROM hookline.event_status_counts;
    INSERT INTO hookline.event_status_counts (status, shard, n)
    SELECT e.status, 0, count(*) FROM hookline.events e GROUP BY e.status;
    DELETE FROM hookline.dismissed_counts;
    INSERT INTO hookline.dismissed_counts (shard, n)
    SELECT 0, count(*) FROM hookline.events e WHERE e.status = 'dead' AND e.dismissed_at IS NOT NULL;
END
$$;
COMMENT ON FUNCTION hookline.recount_events_by_status() IS
  'Recounts hookline.event_status_counts and hookline.dismissed_counts from hookline.events (one scan; '
  'writers of events wait for it). Only needed after writes that skipped the triggers '
  '(session_replication_role = replica, ALTER TABLE ... DISABLE TRIGGER, a data-only restore with '
  '--disable-triggers).';

-- No event is dismissed yet: the count starts at nothing.

-- ---------------------------------------------------------------------------------------------
-- hookline.dismiss
-- ---------------------------------------------------------------------------------------------
CREATE FUNCTION hookline.dismiss(
    p_ids bigint[] DEFAULT NULL,
    p_source text DEFAULT NULL, p_event_type text DEFAULT NULL,
    p_since timestamptz DEFAULT NULL, p_until timestamptz DEFAULT NULL,
    p_reason text DEFAULT NULL, p_by text DEFAULT NULL
) RETURNS TABLE (event_id bigint, dismissed_at timestamptz)
LANGUAGE plpgsql AS $$
DECLARE
    v_filtered boolean := p_source IS NOT NULL OR p_event_type IS NOT NULL OR p_since IS NOT NULL
                          OR p_until IS NOT NULL;
    v_ids bigint[];
    v_id bigint;
    v_status text;
BEGIN
    IF p_ids IS NULL AND NOT v_filtered THEN
        RAISE EXCEPTION 'hookline.dismiss: name event ids (p_ids) or at least one of p_source, p_event_type, p_since, p_until'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- the named events and the matching dead letters, locked in id order (as the bulk replay locks)
    SELECT coalesce(array_agg(m.id ORDER BY m.id), '{}') INTO v_ids
    FROM (
        SELECT e.id
        FROM hookline.events e
        WHERE e.id IN (
            SELECT i.id FROM unnest(coalesce(p_ids, '{}')) AS i (id)
            UNION
            SELECT d.id
            FROM hookline.events d
            WHERE v_filtered AND d.status = 'dead' AND d.dismissed_at IS NULL
              AND (p_source IS NULL OR d.source = p_source)
              AND (p_event_type IS NULL OR d.event_type = p_event_type)
              AND (p_since IS NULL OR d.received_at >= p_since)
              AND (p_until IS NULL OR d.received_at < p_until))
        ORDER BY e.id
        FOR UPDATE OF e
    ) AS m;
    -- an event named by id must exist and be dead (one already dismissed is left as it is)
    FOR v_id IN SELECT DISTINCT i.id FROM unnest(coalesce(p_ids, '{}')) AS i (id) ORDER BY i.id LOOP
        SELECT e.status INTO v_status FROM hookline.events e WHERE e.id = v_id;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'hookline.dismiss: no event with id %', v_id USING ERRCODE = 'no_data_found';
        END IF;
        IF v_status <> 'dead' THEN
            RAISE EXCEPTION 'hookline.dismiss: event % is %, not dead; only dead letters can be dismissed', v_id, v_status
                USING ERRCODE = 'object_not_in_prerequisite_state';
        END IF;
    END LOOP;
    RETURN QUERY
    UPDATE hookline.events e
    SET dismissed_at = now(), dismissed_by = coalesce(p_by, session_user::text), dismissed_reason = p_reason
    WHERE e.id = ANY (v_ids) AND e.status = 'dead' AND e.dismissed_at IS NULL  -- checked again, locked
    RETURNING e.id, e.dismissed_at;
END;
$$;

COMMENT ON FUNCTION hookline.dismiss(bigint[], text, text, timestamptz, timestamptz, text, text) IS
  'Dismiss dead letters: the events named in p_ids, and the dead letters matching every filter given '
  '(source, event type, received_at in [p_since, p_until)); name ids or at least one filter. A dismissed '
  'event keeps its status (dead) and leaves hookline.dead_letters and the dead-letter counts '
  '(hookline.dead_letter_counts); hookline.events.dismissed_at/by/reason record it (p_by defaults to the '
  'database role) and its timeline shows it. Returns (event_id, dismissed_at) of the events dismissed '
  'now. A named id with no event raises no_data_found, one not dead object_not_in_prerequisite_state; '
  'one already dismissed is left as it is. A replay clears the dismissal; the bulk replay leaves '
  'dismissed events out. Usage: SELECT * FROM hookline.dismiss(ARRAY[42, 43], p_reason => ''refunded''); '
  'SELECT * FROM hookline.dismiss(p_source => ''stripe'', p_until => now() - interval ''30 days'').';

-- ---------------------------------------------------------------------------------------------
-- Replay clears the dismissal; the bulk replay leaves dismissed events out
-- ---------------------------------------------------------------------------------------------
-- 0027's function, with the dismissal cleared in its UPDATE.
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
        replays = replays + 1, replay_applied = '{}',
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
  'is no longer dismissed (migration 0046).';

-- 0040's function, leaving dismissed events out.
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
  'Dismissed dead letters (hookline.dismiss) are left out: replay one by its id. '
  'Each event is re-queued as hookline.replay(bigint, ...) does it, in one UPDATE for all of them, and '
  'their jobs are deferred in one INSERT, in id order (migration 0040). The events are locked in id '
  'order; one that a concurrent replay or the payload prune changed meanwhile is left out when it no '
  'longer matches. A p_source of digits alone that no event has raises invalid_parameter_value (migration '
  '0029): hookline.replay(''42'') or an untyped parameter resolves to this form, and meant event 42 '
  '(hookline.replay(42::bigint)).';

-- ---------------------------------------------------------------------------------------------
-- The timeline shows the dismissal
-- ---------------------------------------------------------------------------------------------
-- 0006's view, with a 'dismissed' step (rank 6) for a dismissed event.
CREATE OR REPLACE VIEW hookline.event_timeline AS
SELECT e.id AS event_id, 0 AS step_rank, 'received'::text AS step, e.received_at AS at,
       0::bigint AS duration_ms, NULL::text AS pipeline, NULL::text AS name, NULL::text AS status,
       NULL::integer AS input_tokens, NULL::integer AS output_tokens, NULL::numeric AS cost_usd,
       NULL::bigint AS ref_id, e.source || coalesce(' ' || e.event_type, '') AS detail
FROM hookline.events e
UNION ALL
SELECT e.id, 1, 'queued', e.received_at,
       (extract(epoch FROM (coalesce(e.started_at, now()) - e.received_at)) * 1000)::bigint,
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
  'that). A replay resets started/finished to its own run and clears a dismissal.';
COMMENT ON COLUMN hookline.event_timeline.step_rank IS 'Order of steps that share a timestamp: received 0, queued 1, started 2, model_call 3, action 4, finished 5, dismissed 6.';
COMMENT ON COLUMN hookline.event_timeline.step IS 'received, queued, started, model_call, action, finished or dismissed.';
COMMENT ON COLUMN hookline.event_timeline.name IS 'Model id of a model call, action name of an action, who dismissed a dismissed event.';
COMMENT ON COLUMN hookline.event_timeline.duration_ms IS 'received: 0 (the request itself); queued: wait until a worker started it; started: processing until finished; model_call: API latency; action: its run time; finished: received to finished, end to end; dismissed: NULL. Up to now() while still running.';
COMMENT ON COLUMN hookline.event_timeline.detail IS 'A short note: source and type, replays, attempt number, error, the outcome detail, or the reason a dead letter was dismissed.';
