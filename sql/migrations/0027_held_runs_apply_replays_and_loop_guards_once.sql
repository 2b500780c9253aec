-- A replay's recompute/force is applied once per pipeline, however often a limit holds the event; a
-- loop guard counts and admits in one function, so concurrent events never all see room.
--
-- hookline.replay(id, p_recompute, p_force) queues a job whose arguments ask the worker to call the
-- model again and to run succeeded actions again. The worker applied them while the event's attempts
-- said this was the replay's first run; but a throttle hold gives its attempt back (the run is not an
-- attempt), so when a later pipeline of the event was held at a limit, the next run was "the first
-- run" again and recomputed and re-ran the pipelines before it: a second paid call and a second action
-- per hold. hookline.events.replay_applied now records, at the hold, the pipelines whose recompute and
-- forced actions are done; the next run of the same replay reuses their new answer and does not repeat
-- their actions. A new replay starts the list empty.

ALTER TABLE hookline.events ADD COLUMN replay_applied text[] NOT NULL DEFAULT '{}';
COMMENT ON COLUMN hookline.events.replay_applied IS
  'Pipelines whose part of the latest replay''s recompute / force (a new model answer, actions run again) '
  'is done: written when a later pipeline of the event is held at a limit, so the run after the hold '
  'does not recompute or repeat them. hookline.replay empties it.';

-- 0016's function, with replay_applied = '{}' added to its UPDATE.
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
  'event starts again with no attempts and no infrastructure failures counted.';

-- ---------------------------------------------------------------------------------------------
-- Loop guard: count and admit atomically
-- ---------------------------------------------------------------------------------------------
-- The worker counted an event's key (or tenant) in one statement and set its admitted_at in another:
-- events of one key started together all counted the same admitted events, all saw room and all ran
-- (max_events = 2, 8 events at once: 4 or 5 ran). hookline.admit_guarded_v1 takes a transaction-scoped
-- advisory lock per ordering key and per tenant, counts, and admits (events_per_hour included) before
-- it lets the next admission of the same key or tenant count. Events of configurations without any
-- loop_guard keep hookline.admit_event_v1 (no lock, no extra query).

CREATE FUNCTION hookline.admit_guarded_v1(
    p_event_id bigint, p_max_events integer[], p_window_seconds double precision[], p_count_hour boolean,
    p_events_cap integer
) RETURNS TABLE (blocked integer, n bigint, frees_at timestamptz, reopens_at timestamptz)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    ev record;
    counted bigint;
    oldest timestamptz;
    hour timestamptz := date_trunc('hour', now());
BEGIN
    SELECT e.source, e.ordering_key, e.tenant, e.admitted_at INTO ev FROM hookline.events e WHERE e.id = p_event_id;
    IF NOT FOUND THEN
        RETURN QUERY SELECT NULL::integer, NULL::bigint, NULL::timestamptz, NULL::timestamptz;
        RETURN;
    END IF;
    -- one admission at a time per ordering key and per tenant (a keyed event counts for its tenant too):
    -- the next one counts after this one committed. Key before tenant, always: no deadlock.
    IF ev.ordering_key IS NOT NULL THEN
        PERFORM pg_advisory_xact_lock(
            hashtextextended('hookline.loop_guard:key:' || ev.source || ':' || ev.ordering_key, 0));
    END IF;
    PERFORM pg_advisory_xact_lock(hashtextextended('hookline.loop_guard:tenant:' || coalesce(ev.tenant, ''), 0));
    FOR i IN 1 .. coalesce(array_length(p_max_events, 1), 0) LOOP
        IF ev.ordering_key IS NOT NULL THEN
            SELECT count(*), min(e.admitted_at) INTO counted, oldest FROM hookline.events e
            WHERE e.source = ev.source AND e.ordering_key = ev.ordering_key AND e.admitted_at IS NOT NULL
              AND e.admitted_at > now() - make_interval(secs => p_window_seconds[i]) AND e.id <> p_event_id;
        ELSIF ev.tenant IS NULL THEN
            SELECT count(*), min(e.admitted_at) INTO counted, oldest FROM hookline.events e
            WHERE e.tenant IS NULL AND e.admitted_at IS NOT NULL
              AND e.admitted_at > now() - make_interval(secs => p_window_seconds[i]) AND e.id <> p_event_id;
        ELSE
            SELECT count(*), min(e.admitted_at) INTO counted, oldest FROM hookline.events e
            WHERE e.tenant = ev.tenant AND e.admitted_at IS NOT NULL
              AND e.admitted_at > now() - make_interval(secs => p_window_seconds[i]) AND e.id <> p_event_id;
        END IF;
        IF counted >= p_max_events[i] THEN  -- nothing admitted, nothing counted
            RETURN QUERY SELECT i, counted, oldest + make_interval(secs => p_window_seconds[i]), NULL::timestamptz;
            RETURN;
        END IF;
    END LOOP;
    IF ev.admitted_at IS NULL THEN
        IF p_count_hour THEN  -- hookline.admit_event_v1's count against events_per_hour
            INSERT INTO hookline.budget_windows (tenant, period, window_start)
            VALUES (coalesce(ev.tenant, ''), 'hour', hour) ON CONFLICT DO NOTHING;
            UPDATE hookline.budget_windows w SET events = w.events + 1
            WHERE w.tenant = coalesce(ev.tenant, '') AND w.period = 'hour' AND w.window_start = hour
              AND (p_events_cap IS NULL OR w.events < p_events_cap);
            IF NOT FOUND THEN
                RETURN QUERY SELECT NULL::integer, NULL::bigint, NULL::timestamptz, hour + interval '1 hour';
                RETURN;
            END IF;
        END IF;
        UPDATE hookline.events SET admitted_at = now() WHERE id = p_event_id;
    END IF;
    RETURN QUERY SELECT NULL::integer, NULL::bigint, NULL::timestamptz, NULL::timestamptz;
END;
$$;
COMMENT ON FUNCTION hookline.admit_guarded_v1(bigint, integer[], double precision[], boolean, integer) IS
  'Admit an event under its pipelines'' loop guards (parallel arrays: max_events, window_seconds), counting '
  'and admitting under a transaction-scoped advisory lock per ordering key and per tenant, so concurrent '
  'events of one key or tenant never all see room. Returns blocked = the 1-based index of the first guard '
  'whose window is full, with its count (other events admitted in the window, per ordering key, else per '
  'tenant) and when its oldest leaves it; else, with p_count_hour, counts the event once against '
  'events_per_hour (p_events_cap, NULL = no cap) as hookline.admit_event_v1 does: reopens_at = when the next '
  'hour opens if it is full. Nothing is counted or admitted unless every column comes back NULL; an event '
  'admitted before is checked against the guards again but not counted again.';
