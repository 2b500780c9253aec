-- A run's claim stays its own across replays: the fencing token counts every claim of the event's life.
--
-- Migration 0047 fenced an event's outcome with the attempts value its run's claim returned. A replay
-- starts the event again at attempts 0, so the replay's first claim got attempts 1 again: a run that
-- outlived a later run's outcome (its job taken for stalled and handed to another worker, which
-- finished the event) and then a replay of the event held the same token as the replay's run. Its late
-- retry or hold was accepted (the event became retrying or throttled under the replay's run, whose own
-- outcome was then refused, its job left doing), and its late outcome overwrote the event; only a
-- finish that carried the stale run's procrastinate job (finished by the later run, so
-- procrastinate_finish_job_v1 raised) failed, and then as a database error.
--
-- hookline.events.claims now counts the claims of the event's whole life: each claim adds one, nothing
-- takes it back (not a replay, not a hold, which gives its attempt back). The claim returns it, and the
-- worker's outcome writes compare it: a token is never handed out twice for one event.
--
-- The forms of earlier releases stay and keep their meaning, for the workers of the previous release
-- during an upgrade: hookline.claim_events (its columns unchanged: statements the old workers prepared
-- keep their result type), fetch_job and start_events return no claims column, and finish_event and
-- finish_events with an integer claim compare attempts, as in 0047. Their claims count too, so a run of
-- the new release is fenced off by a later claim of an old worker. The new forms carry a _v2 name, not
-- an overload: a claim given as an untyped or smallint number would find two forms equally good.

ALTER TABLE hookline.events ADD COLUMN claims bigint NOT NULL DEFAULT 0;
COMMENT ON COLUMN hookline.events.claims IS
  'Claims of the event over its whole life: each worker claim adds one; a replay and a throttle hold '
  'leave it (unlike attempts). The latest is the current run''s fencing token: the worker writes the '
  'event''s outcome only while the event is processing with the claims its claim returned (migration '
  '0048).';

-- ---------------------------------------------------------------------------------------------
-- The claim
-- ---------------------------------------------------------------------------------------------
CREATE FUNCTION hookline.claim_events_v2(p_ids bigint[])
RETURNS TABLE (
    id bigint, source text, delivery_id text, event_type text, tenant text, ordering_key text,
    occurred_at timestamptz, payload jsonb, attempts integer, received_at timestamptz, request_id text,
    answers jsonb, claims bigint
)
LANGUAGE sql
SET enable_seqscan = off  -- by id, whatever the statistics say (migration 0020)
AS $$
    WITH claimed AS (
        UPDATE hookline.events e
        SET status = 'processing',
            attempts = e.attempts + 1,
            claims = e.claims + 1,
            started_at = coalesce(e.started_at, now())
        WHERE e.id = ANY (p_ids)
          -- an expression, so that no plan reads the status index (every waiting event) for it
          AND (e.status || '') IN ('queued', 'retrying', 'processing', 'throttled')
        RETURNING e.id, e.source, e.delivery_id, e.event_type, e.tenant, e.ordering_key, e.occurred_at,
                  e.payload, e.attempts, e.received_at, e.request_id, e.claims
    )
    SELECT c.id, c.source, c.delivery_id, c.event_type, c.tenant, c.ordering_key, c.occurred_at, c.payload,
           c.attempts, c.received_at, c.request_id,
           (SELECT coalesce(jsonb_object_agg(l.pipeline, jsonb_build_object('output', l.output)), '{}'::jsonb)
            FROM hookline.llm_calls l
            WHERE l.event_id = c.id AND l.status = 'succeeded'),
           c.claims
    FROM claimed c
$$;

COMMENT ON FUNCTION hookline.claim_events_v2(bigint[]) IS
  'The worker''s claim: the events of p_ids that are not terminal become processing (attempts + 1, '
  'claims + 1, started_at kept from the first claim), returned with the answers already stored for them '
  '(answers: {pipeline: {"output": …}} of their succeeded model calls, which a retry reuses instead of '
  'paying twice) and claims, the run''s fencing token (migration 0048). An event already terminal returns '
  'no row. Found by id alone, by the primary key, planned with sequential scans off (migration 0020). '
  'Called by fetch_job_v2 and start_events_v2.';

-- 0020's function, for the workers of earlier releases: the same claim (claims counted), its columns.
CREATE OR REPLACE FUNCTION hookline.claim_events(p_ids bigint[])
RETURNS TABLE (
    id bigint, source text, delivery_id text, event_type text, tenant text, ordering_key text,
    occurred_at timestamptz, payload jsonb, attempts integer, received_at timestamptz, request_id text,
    answers jsonb
)
LANGUAGE sql
SET enable_seqscan = off
AS $$
    SELECT c.id, c.source, c.delivery_id, c.event_type, c.tenant, c.ordering_key, c.occurred_at, c.payload,
           c.attempts, c.received_at, c.request_id, c.answers
    FROM hookline.claim_events_v2(p_ids) AS c
$$;

COMMENT ON FUNCTION hookline.claim_events(bigint[]) IS
  'hookline.claim_events_v2 without its claims column: the claim of fetch_job and start_events, the '
  'forms the workers of releases before migration 0048 call. Kept for them during an upgrade.';

CREATE FUNCTION hookline.fetch_job_v2(
    p_queues character varying[], p_worker_id bigint, p_claim boolean, p_task text, p_pickup boolean
)
RETURNS TABLE (
    id bigint, status procrastinate_job_status, task_name character varying, priority integer, lock text,
    queueing_lock text, args jsonb, scheduled_at timestamptz, queue_name character varying, attempts integer,
    worker_id bigint, more_waiting boolean, claimed boolean,
    claim_id bigint, claim_source text, claim_delivery_id text, claim_event_type text, claim_tenant text,
    claim_ordering_key text, claim_occurred_at timestamptz, claim_payload jsonb, claim_attempts integer,
    claim_received_at timestamptz, claim_request_id text, claim_answers jsonb, claim_pickup_s float8,
    claim_claims bigint
)
LANGUAGE sql
SET plan_cache_mode = force_generic_plan  -- planned once per session (migration 0024)
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
        SELECT c.* FROM hookline.claim_events_v2(ARRAY(SELECT l.event_id FROM lone l)) AS c
        WHERE EXISTS (SELECT 1 FROM lone)
    )
    SELECT f.*, EXISTS (SELECT 1 FROM lone),
           c.id, c.source, c.delivery_id, c.event_type, c.tenant, c.ordering_key, c.occurred_at, c.payload,
           c.attempts, c.received_at, c.request_id, c.answers,
           CASE WHEN p_pickup AND EXISTS (SELECT 1 FROM lone) THEN hookline.job_pickup_seconds(f.id) END,
           c.claims
    FROM fetched f
    LEFT JOIN claim c ON true
$$;

COMMENT ON FUNCTION hookline.fetch_job_v2(character varying[], bigint, boolean, text, boolean) IS
  'hookline.fetch_job with the claim''s fencing token: claim_claims, the event''s claims after the claim '
  '(hookline.claim_events_v2, migration 0048). The worker''s fetch (fetch_job in sql/queries/worker.sql): '
  'procrastinate_fetch_job_v2(p_queues, p_worker_id) and its columns, more_waiting, and, when p_claim and '
  'the job is a lone process_event job of task p_task (not a replay), its event claimed in the same '
  'statement (claimed; claim_* are start_events_v2'' event columns, claim_id NULL when already terminal; '
  'claim_pickup_s when p_pickup). A claiming fetch commits asynchronously. Planned once per session.';

COMMENT ON FUNCTION hookline.fetch_job(character varying[], bigint, boolean, text, boolean) IS
  'hookline.fetch_job_v2 without claim_claims: the fetch of the workers of releases before migration '
  '0048, kept for them during an upgrade (its claim counts hookline.events.claims too). Planned once per '
  'session (migration 0024).';

CREATE FUNCTION hookline.start_events_v2(
    p_job_id bigint, p_queue text, p_task text, p_more integer, p_event_id bigint, p_pickup boolean
)
RETURNS TABLE (
    event_id bigint, job_id bigint, job_attempts integer,
    id bigint, source text, delivery_id text, event_type text, tenant text, ordering_key text,
    occurred_at timestamptz, payload jsonb, attempts integer, received_at timestamptz, request_id text,
    answers jsonb, claims bigint, pickup_s float8
)
LANGUAGE sql
SET plan_cache_mode = force_generic_plan  -- planned once per session (migration 0024)
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
    LEFT JOIN hookline.claim_events_v2(ARRAY(SELECT x.event_id FROM wanted x)) AS c ON c.id = w.event_id
    CROSS JOIN (SELECT set_config('synchronous_commit', 'off', true)) AS async_commit  -- for the transaction
$$;

COMMENT ON FUNCTION hookline.start_events_v2(bigint, text, text, integer, bigint, boolean) IS
  'hookline.start_events with the claim''s fencing token: claims, the event''s claims after the claim '
  '(hookline.claim_events_v2, migration 0048). The worker''s claim (start_events in '
  'sql/queries/worker.sql): event p_event_id (of job p_job_id, which procrastinate handed over) and, when '
  'p_more > 0, up to p_more further runnable process_event jobs of queue p_queue and task p_task with '
  'their events (hookline.claim_more_jobs). One row per job: event_id, job_id (NULL for the handed-over '
  'job), job_attempts, the event''s columns (id NULL when already terminal) and pickup_s when p_pickup. '
  'Commits asynchronously. Planned once per session.';

COMMENT ON FUNCTION hookline.start_events(bigint, text, text, integer, bigint, boolean) IS
  'hookline.start_events_v2 without claims: the claim of the workers of releases before migration 0048, '
  'kept for them during an upgrade (its claim counts hookline.events.claims too). Planned once per '
  'session (migration 0024).';

-- ---------------------------------------------------------------------------------------------
-- The outcome, for the run holding the current claim
-- ---------------------------------------------------------------------------------------------
-- 0047's functions, comparing claims instead of attempts.
CREATE FUNCTION hookline.finish_event_v2(
    p_event_id bigint, p_status text, p_dry_run boolean, p_detail text, p_error text, p_job_id bigint,
    p_claim bigint
) RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    IF p_event_id IS NOT NULL THEN
        UPDATE hookline.events
        SET status = p_status,
            finished_at = now(),
            dry_run = p_dry_run,
            detail = p_detail,
            last_error = coalesce(p_error, last_error)
        WHERE id = p_event_id
          -- an expression, so that no plan reads the status index for it (as hookline.claim_events)
          AND (p_claim IS NULL OR ((status || '') = 'processing' AND claims = p_claim));
        IF NOT FOUND AND p_claim IS NOT NULL THEN
            RETURN false;  -- not this run's any more: the job is the later run's too
        END IF;
    END IF;
    IF p_job_id IS NOT NULL THEN
        PERFORM procrastinate_finish_job_v1(p_job_id, 'succeeded', false);
    END IF;
    RETURN true;
END;
$$;

COMMENT ON FUNCTION hookline.finish_event_v2(bigint, text, boolean, text, text, bigint, bigint) IS
  'Records an event''s terminal outcome (succeeded, skipped, dead) for the run holding claim p_claim (the '
  'claims value its claim returned: hookline.claim_events_v2): only while the event is processing with '
  'that many claims, i.e. no later claim and no outcome since, a replay included (migration 0048). Then, '
  'when p_job_id is given (the event''s procrastinate job), marks that job succeeded in the same '
  'statement. Returns false, and changes nothing (the job neither), when the claim is no longer current. '
  'p_claim NULL: no such test (the give-up of a job whose claim itself kept failing); p_event_id NULL: '
  'only the job is finished.';

COMMENT ON FUNCTION hookline.finish_event(bigint, text, boolean, text, text, bigint, integer) IS
  'hookline.finish_event_v2 with the attempts value the claim returned as p_claim (migration 0047): the '
  'form the workers of the release before migration 0048 call, kept for them during an upgrade. A run '
  'that outlives a replay of its event may share that token with the replay''s run.';

CREATE FUNCTION hookline.finish_events_v2(
    p_event_ids bigint[], p_statuses text[], p_dry_runs boolean[], p_details text[], p_job_ids bigint[],
    p_claims bigint[]
) RETURNS bigint[]
LANGUAGE plpgsql
-- By primary key, whatever the statistics its plans were made with (migration 0023).
SET enable_seqscan = off
SET enable_hashjoin = off
SET enable_mergejoin = off
SET plan_cache_mode = force_generic_plan  -- planned once per session, not at every call
AS $$
DECLARE
    v_finished bigint[];
    v_job_ids bigint[];
    v_jobs integer := 0;
    v_wanted integer;
BEGIN
    IF cardinality(p_event_ids) = 1 THEN  -- a batch of one, the usual one at a low rate: no join to set up
        WITH upd AS (
            UPDATE hookline.events
            SET status = p_statuses[1], finished_at = now(), dry_run = p_dry_runs[1], detail = p_details[1]
            WHERE id = p_event_ids[1]
              AND (p_claims[1] IS NULL OR ((status || '') = 'processing' AND claims = p_claims[1]))
            RETURNING id
        )
        SELECT array_agg(id) INTO v_finished FROM upd;
        v_job_ids := CASE WHEN v_finished IS NOT NULL OR p_claims[1] IS NULL THEN array_remove(p_job_ids, NULL) END;
    ELSE  -- an event given twice keeps its last outcome, as one call per row in order did
        WITH upd AS (
            UPDATE hookline.events e
            SET status = f.status, finished_at = now(), dry_run = f.dry_run, detail = f.detail
            FROM (SELECT DISTINCT ON (u.event_id) u.event_id, u.status, u.dry_run, u.detail, u.claim
                  FROM unnest(p_event_ids, p_statuses, p_dry_runs, p_details, p_claims) WITH ORDINALITY
                       AS u(event_id, status, dry_run, detail, claim, ord)
                  ORDER BY u.event_id, u.ord DESC) AS f
            WHERE e.id = f.event_id AND e.id = ANY (p_event_ids)  -- the second test: a probe per id in any plan
              AND (f.claim IS NULL OR ((e.status || '') = 'processing' AND e.claims = f.claim))
            RETURNING e.id
        )
        SELECT array_agg(id) INTO v_finished FROM upd;
        -- the jobs of the rows whose event this call finished (or that carry no claim)
        SELECT array_agg(u.job_id) INTO v_job_ids
        FROM unnest(p_event_ids, p_job_ids, p_claims) AS u(event_id, job_id, claim)
        WHERE u.job_id IS NOT NULL AND (u.claim IS NULL OR u.event_id = ANY (v_finished));
    END IF;
    v_wanted := coalesce(cardinality(v_job_ids), 0);  -- a job given twice is refused

    -- procrastinate_finish_job_v1's update (procrastinate 3.10), for each job of a finished event
    IF v_wanted = 1 THEN
        UPDATE procrastinate_jobs
        SET status = 'succeeded', abort_requested = false,
            attempts = CASE status WHEN 'doing' THEN attempts + 1 ELSE attempts END
        WHERE id = v_job_ids[1] AND status IN ('todo', 'doing');
        GET DIAGNOSTICS v_jobs = ROW_COUNT;
    ELSIF v_wanted > 0 THEN
        UPDATE procrastinate_jobs
        SET status = 'succeeded', abort_requested = false,
            attempts = CASE status WHEN 'doing' THEN attempts + 1 ELSE attempts END
        WHERE id = ANY (v_job_ids) AND status IN ('todo', 'doing');
        GET DIAGNOSTICS v_jobs = ROW_COUNT;
    END IF;
    IF v_jobs <> v_wanted THEN
        RAISE 'Job was not found or not in "doing" or "todo" status (% of % job(s) finished)', v_jobs, v_wanted;
    END IF;
    RETURN coalesce(v_finished, '{}');
END;
$$;

COMMENT ON FUNCTION hookline.finish_events_v2(bigint[], text[], boolean[], text[], bigint[], bigint[]) IS
  'hookline.finish_event_v2 for a batch (the worker''s group commit): records each event''s terminal '
  'outcome (parallel arrays; an event given twice keeps its last) for the run holding claim p_claims[i] '
  '(NULL: no test), only while the event is processing with that many claims (migration 0048), and '
  'marks the procrastinate jobs of the events it finished succeeded, as procrastinate_finish_job_v1 '
  'does, in one UPDATE each; a row whose claim is no longer current changes nothing, its job neither. '
  'Raises, and so fails the whole statement, when such a job is not todo or doing. Returns the ids of '
  'the events it finished.';

COMMENT ON FUNCTION hookline.finish_events(bigint[], text[], boolean[], text[], bigint[], integer[]) IS
  'hookline.finish_events_v2 with the attempts values the claims returned as p_claims (migration 0047): '
  'the form the workers of the release before migration 0048 call, kept for them during an upgrade.';
