-- A replay's recompute/force is applied once per pipeline, however often a limit holds the event.
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
