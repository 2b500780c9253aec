-- The worker's fetch and claim are planned once per session, not at every call.
--
-- fetch_job and start_events (sql/queries/worker.sql) were statements of their own, prepared on the
-- worker's connections. Postgres made a custom plan for them at every execution and never switched to
-- the generic one (pg_prepared_statements: 0 generic plans, 300 custom): a custom plan folds their
-- boolean parameters (claim, pickup) and so always looks cheaper than the generic plan. Planning them
-- took about a fifth of the Postgres time of a fetch and half of that of a claim, for every event: in
-- the bench's worker row with a 1 s model (events arriving a few at a time), the BIND alone was 180 us
-- per fetch and 205 us per claim, with the functions they call planned again inside.
--
-- Both are now functions planned once per session (plan_cache_mode = force_generic_plan, which holds
-- for what they call too); the statements call them. SQL-language functions keep their plans for the
-- session since Postgres 18; on older servers their bodies are planned at each call, as the
-- statements were (not measured there). Measured as the backend's own CPU time, the old
-- statements and the new ones interleaved on two connections, 400 events each, each fetched alone:
-- 684 -> 519 us per fetch (two thirds of them claiming their event) and 727 -> 398 us per claim.
--
-- A plan made once must stay a lookup by key however the tables grow after it was made. The functions
-- they call already say so (hookline.claim_events, claim_more_jobs and job_waiting: sequential scans
-- off, migrations 0020-0022; procrastinate_fetch_job_v2 walks procrastinate's own todo index);
-- hookline.job_pickup_seconds, which reads procrastinate_events by job, now does too: with the statistics
-- of a new deployment (a few jobs), its plan made once scanned the whole event log for every pickup
-- measured, twice. tests/integration/test_lookups_by_id.py counts the rows each statement reads after
-- the tables grew under plans made while they were small.

CREATE FUNCTION hookline.fetch_job(
    p_queues character varying[], p_worker_id bigint, p_claim boolean, p_task text, p_pickup boolean
)
RETURNS TABLE (
    id bigint, status procrastinate_job_status, task_name character varying, priority integer, lock text,
    queueing_lock text, args jsonb, scheduled_at timestamptz, queue_name character varying, attempts integer,
    worker_id bigint, more_waiting boolean, claimed boolean,
    claim_id bigint, claim_source text, claim_delivery_id text, claim_event_type text, claim_tenant text,
    claim_ordering_key text, claim_occurred_at timestamptz, claim_payload jsonb, claim_attempts integer,
    claim_received_at timestamptz, claim_request_id text, claim_answers jsonb, claim_pickup_s float8
)
LANGUAGE sql
SET plan_cache_mode = force_generic_plan  -- planned once per session (see above)
AS $$
    WITH job AS MATERIALIZED (
        SELECT j.id, j.status, j.task_name, j.priority, j.lock, j.queueing_lock, j.args, j.scheduled_at,
               j.queue_name, j.attempts, j.worker_id
        FROM procrastinate_fetch_job_v2(p_queues, p_worker_id) AS j
    ), fetched AS MATERIALIZED (
        SELECT job.*,
               job.id IS NULL OR hookline.job_waiting(p_queues, job.id) AS more_waiting
        FROM job
    ), lone AS MATERIALIZED (
        SELECT (f.args ->> 'event_id')::bigint AS event_id,
               set_config('synchronous_commit', 'off', true) AS async_commit  -- for the transaction
        FROM fetched f
        WHERE p_claim AND NOT f.more_waiting AND f.task_name = p_task
          AND f.args ? 'event_id' AND NOT f.args ? 'recompute' AND NOT f.args ? 'force_actions'
    ), claim AS MATERIALIZED (
        SELECT c.* FROM hookline.claim_events(ARRAY(SELECT l.event_id FROM lone l)) AS c
        WHERE EXISTS (SELECT 1 FROM lone)
    )
    SELECT f.*, EXISTS (SELECT 1 FROM lone),
           c.id, c.source, c.delivery_id, c.event_type, c.tenant, c.ordering_key, c.occurred_at, c.payload,
           c.attempts, c.received_at, c.request_id, c.answers,
           CASE WHEN p_pickup AND EXISTS (SELECT 1 FROM lone) THEN hookline.job_pickup_seconds(f.id) END
    FROM fetched f
    LEFT JOIN claim c ON true
$$;

COMMENT ON FUNCTION hookline.fetch_job(character varying[], bigint, boolean, text, boolean) IS
  'The worker''s fetch (fetch_job in sql/queries/worker.sql), sent by its queue connector in place of '
  'procrastinate''s: procrastinate_fetch_job_v2(p_queues, p_worker_id) and its columns, then more_waiting '
  '(false when a job was fetched and no other job of p_queues is runnable now: hookline.job_waiting) and, '
  'when p_claim and the job is a lone process_event job of task p_task (not a replay), its event claimed '
  'in the same statement (claimed; claim_* are start_events'' event columns, claim_id NULL when already '
  'terminal; claim_pickup_s when p_pickup). A claiming fetch commits asynchronously. Planned once per '
  'session (migration 0024).';

CREATE FUNCTION hookline.start_events(
    p_job_id bigint, p_queue text, p_task text, p_more integer, p_event_id bigint, p_pickup boolean
)
RETURNS TABLE (
    event_id bigint, job_id bigint, job_attempts integer,
    id bigint, source text, delivery_id text, event_type text, tenant text, ordering_key text,
    occurred_at timestamptz, payload jsonb, attempts integer, received_at timestamptz, request_id text,
    answers jsonb, pickup_s float8
)
LANGUAGE sql
SET plan_cache_mode = force_generic_plan  -- planned once per session (see above)
AS $$
    WITH more AS (
        SELECT m.job_id, m.event_id, m.job_attempts
        FROM hookline.claim_more_jobs(p_job_id, p_queue, p_task, p_more) AS m
    ), wanted AS (
        SELECT p_event_id AS event_id, NULL::bigint AS job_id, NULL::integer AS job_attempts
        UNION ALL
        SELECT m.event_id, m.job_id, m.job_attempts FROM more m
    )
    SELECT w.event_id, w.job_id, w.job_attempts, c.*,
           CASE WHEN p_pickup THEN hookline.job_pickup_seconds(coalesce(w.job_id, p_job_id)) END
    FROM wanted w
    LEFT JOIN hookline.claim_events(ARRAY(SELECT x.event_id FROM wanted x)) AS c ON c.id = w.event_id
    CROSS JOIN (SELECT set_config('synchronous_commit', 'off', true)) AS async_commit  -- for the transaction
$$;

COMMENT ON FUNCTION hookline.start_events(bigint, text, text, integer, bigint, boolean) IS
  'The worker''s claim (start_events in sql/queries/worker.sql): event p_event_id (of job p_job_id, which '
  'procrastinate handed over) and, when p_more > 0, up to p_more further runnable process_event jobs of '
  'queue p_queue and task p_task with their events (hookline.claim_more_jobs), claimed by '
  'hookline.claim_events. One row per job: event_id, job_id (NULL for the handed-over job), job_attempts, '
  'the event''s columns (id NULL when already terminal) and pickup_s when p_pickup. Commits '
  'asynchronously. Planned once per session (migration 0024).';

ALTER FUNCTION hookline.job_pickup_seconds(bigint) SET enable_seqscan = off;  -- by job, whatever the statistics

COMMENT ON FUNCTION hookline.job_pickup_seconds(bigint) IS
  'Seconds from procrastinate job p_job_id becoming runnable (deferred, retried, or its scheduled_at) '
  'to its start (its last started event, or now() when the calling statement is the fetch that starts '
  'it); NULL when procrastinate''s event log lacks its deferral. The worker''s '
  'hookline_pickup_delay_seconds metric. Reads procrastinate_events by job with sequential scans off '
  '(migration 0024): its plan is made once per session inside hookline.fetch_job and start_events.';
