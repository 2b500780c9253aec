-- Events of one ordering key run in arrival order, whatever their priorities; a bulk replay whose
-- source is an event id says so instead of replaying nothing.
--
-- An event's job carries its ordering key as procrastinate lock. procrastinate's fetch rule (restated
-- by hookline.claimable_jobs, migration 0013) let a todo job of a lock hold back a later one only when
-- its priority was at least as high: a queued routine event (priority 0) was overtaken by a later
-- urgent event of the same key (a pipeline with priority = 10), and so was a routine event waiting for
-- its retry (todo, scheduled a few seconds ahead). The README promises "same key: one at a time, in
-- arrival order". Now any earlier job of the lock (a lower id: todo, due or not, or doing) and any
-- running job of the lock holds a job back. Priority still orders the jobs of different keys and the
-- jobs without a key; the first job of each key takes its place in that order.
--
-- The plans do not change: the rule is still one anti-join on the lock, answered from
-- procrastinate_jobs_id_lock_idx_v1 (todo and doing jobs only) with the lock as index condition, and
-- only its filter changed (a later job of the lock that runs, which only the old rule can have left
-- behind, still holds every job of the lock back: procrastinate_jobs_lock_idx_v1 allows one running
-- job per lock). Measured as before (tests/integration/test_claim_order.py, test_lookups_by_id.py), and
-- tests/integration/test_key_order.py holds both functions to the rule with a keyed backlog.
--
-- procrastinate_fetch_job_v2 is procrastinate's function (migration 0001); its body below is
-- procrastinate 3's with the lock test changed, and it keeps the settings of migrations 0013 and 0022
-- (CREATE OR REPLACE resets them). A procrastinate upgrade that replaces the function must carry the
-- rule and the settings over (test_key_order.py and test_claim_order.py fail until it does).

CREATE OR REPLACE FUNCTION procrastinate_fetch_job_v2(
    target_queue_names character varying[],
    p_worker_id bigint
)
    RETURNS procrastinate_jobs
    LANGUAGE plpgsql
    SET enable_sort = off     -- migration 0013: walk procrastinate_jobs_priority_idx_v1
    SET enable_seqscan = off  -- migration 0022: the update finds its job by primary key
AS $$
DECLARE
	found_jobs procrastinate_jobs;
BEGIN
    WITH candidate AS (
        SELECT jobs.*
            FROM procrastinate_jobs AS jobs
            WHERE
                -- reject the job if its lock has an earlier job waiting or any job running: arrival
                -- order, whatever the priorities (hookline migration 0029)
                NOT EXISTS (
                    SELECT 1
                        FROM procrastinate_jobs AS other_jobs
                        WHERE
                            jobs.lock IS NOT NULL
                            AND other_jobs.lock = jobs.lock
                            AND other_jobs.status IN ('todo', 'doing')
                            AND (
                                -- job with same lock is already running
                                other_jobs.status = 'doing'
                                OR
                                -- job with same lock is waiting (due or not) and was queued first
                                other_jobs.id < jobs.id
                            )
                )
                AND jobs.status = 'todo'
                AND (target_queue_names IS NULL OR jobs.queue_name = ANY( target_queue_names ))
                AND (jobs.scheduled_at IS NULL OR jobs.scheduled_at <= now())
            ORDER BY jobs.priority DESC, jobs.id ASC LIMIT 1
            FOR UPDATE OF jobs SKIP LOCKED
    )
    UPDATE procrastinate_jobs
        SET status = 'doing', worker_id = p_worker_id
        FROM candidate
        WHERE procrastinate_jobs.id = candidate.id
        RETURNING procrastinate_jobs.* INTO found_jobs;

 RETURN found_jobs;
END;
$$;

COMMENT ON FUNCTION procrastinate_fetch_job_v2(character varying[], bigint) IS
  'procrastinate''s fetch (called by hookline.fetch_job): the runnable todo job of target_queue_names with '
  'the highest priority, then the oldest, becomes doing for worker p_worker_id. A job with a lock (an '
  'event''s ordering key) is runnable only when no earlier job of its lock is todo or doing and none is '
  'running: the jobs of one lock run one at a time in arrival order, whatever their priorities '
  '(hookline migration 0029; procrastinate''s own rule let a higher priority pass). Planned with sorting '
  'and sequential scans off (migrations 0013, 0022).';

CREATE OR REPLACE FUNCTION hookline.claimable_jobs(p_queue text, p_task text, p_limit integer)
RETURNS SETOF bigint
LANGUAGE sql
SET enable_sort = off
AS $$
    SELECT jobs.id
    FROM procrastinate_jobs AS jobs
    WHERE p_limit > 0
      AND jobs.status = 'todo'
      AND jobs.queue_name = p_queue
      AND jobs.task_name = p_task
      AND (jobs.scheduled_at IS NULL OR jobs.scheduled_at <= now())
      AND jobs.args ? 'event_id'
      AND NOT jobs.args ? 'recompute'
      AND NOT jobs.args ? 'force_actions'
      -- no job of the lock runs, none queued earlier waits (due or not): arrival order, whatever
      -- the priorities
      AND NOT EXISTS (
          SELECT 1 FROM procrastinate_jobs AS other
          WHERE jobs.lock IS NOT NULL
            AND other.lock = jobs.lock
            AND other.status IN ('todo', 'doing')
            AND (other.status = 'doing' OR other.id < jobs.id))
    ORDER BY jobs.priority DESC, jobs.id ASC
    LIMIT greatest(p_limit, 0)
    FOR UPDATE OF jobs SKIP LOCKED
$$;

COMMENT ON FUNCTION hookline.claimable_jobs(text, text, integer) IS
  'The batch claim''s candidates (start_events in sql/queries/worker.sql): up to p_limit runnable '
  'process_event jobs of queue p_queue and task p_task, by the fetch rules of procrastinate_fetch_job_v2 '
  '(runnable; no earlier job of the same lock todo or doing and none running, so one ordering key''s '
  'events run in arrival order whatever their priorities, migration 0029; then priority and age), locked '
  'FOR UPDATE SKIP LOCKED. Replays (recompute, force_actions) are never batch-claimed. Planned with '
  'enable_sort = off, so the queue is walked in procrastinate_jobs_priority_idx_v1 order instead of read '
  'whole and sorted.';

-- The bulk replay, and hookline.replay(p_event_id bigint, ...). An argument of unknown type (a quoted
-- literal, hookline.replay('42'), or a driver's untyped parameter, hookline.replay($1) sent with '42')
-- resolves to this text overload: it bulk-replayed the events of source '42', none, and said nothing.
-- A source of digits alone that no event has now raises, naming the call that replays the event.
-- 0004's function, with that check added.
CREATE OR REPLACE FUNCTION hookline.replay(
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
  'received_at in [p_since, p_until)); at least one filter is required. Returns (event_id, job_id) rows. '
  'A p_source of digits alone that no event has raises invalid_parameter_value (migration 0029): '
  'hookline.replay(''42'') or an untyped parameter resolves to this form, and meant event 42 '
  '(hookline.replay(42::bigint)).';
