-- An event's outcome is written only by the run that holds its current claim.
--
-- A job procrastinate takes for stalled (its worker's heartbeat late while the worker lives: a blocked
-- event loop, a long pause) is run by a second worker while the first still runs it. Both claimed the
-- event (hookline.claim_events: status processing, attempts + 1), and both wrote its outcome: the first
-- run, finishing last, dead-lettered an event the second had finished, or put it back to retrying or
-- throttled (and so ran it again), and finished the procrastinate job the second was running, whose own
-- finish then failed.
--
-- A run now passes its claim (the attempts value its claim returned: the fencing token) to the writes
-- that end it, and they apply only while the event is still processing under that claim: no claim came
-- after it (each claim adds one; a hold, which gives its attempt back, is itself such a write, so a later
-- run's token is never handed out again while an older run may still write) and no outcome was written
-- since. A write refused this way changes nothing, the procrastinate job included: it is the later run's.
-- retry_event and throttle_event (sql/queries/worker.sql, limits.sql) carry the same test.
--
-- One hole is left: hookline.replay starts an event again at attempts 0, so a run that outlived both a
-- later run's outcome and a replay of it shares its token with the replay's first claim.
--
-- The forms without a claim stay, unchanged, for the workers of earlier releases during an upgrade.

CREATE FUNCTION hookline.finish_event(
    p_event_id bigint, p_status text, p_dry_run boolean, p_detail text, p_error text, p_job_id bigint,
    p_claim integer
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
          AND (p_claim IS NULL OR ((status || '') = 'processing' AND attempts = p_claim));
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

COMMENT ON FUNCTION hookline.finish_event(bigint, text, boolean, text, text, bigint, integer) IS
  'Records an event''s terminal outcome (succeeded, skipped, dead) for the run holding claim p_claim (the '
  'attempts value its claim returned): only while the event is processing with that many attempts, i.e. '
  'no later claim and no outcome since (migration 0047). Then, when p_job_id is given (the event''s '
  'procrastinate job), marks that job succeeded in the same statement. Returns false, and changes '
  'nothing (the job neither), when the claim is no longer current. p_claim NULL: no such test (the '
  'give-up of a job whose claim itself kept failing); p_event_id NULL: only the job is finished.';

CREATE FUNCTION hookline.finish_events(
    p_event_ids bigint[], p_statuses text[], p_dry_runs boolean[], p_details text[], p_job_ids bigint[],
    p_claims integer[]
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
              AND (p_claims[1] IS NULL OR ((status || '') = 'processing' AND attempts = p_claims[1]))
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
              AND (f.claim IS NULL OR ((e.status || '') = 'processing' AND e.attempts = f.claim))
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

COMMENT ON FUNCTION hookline.finish_events(bigint[], text[], boolean[], text[], bigint[], integer[]) IS
  'hookline.finish_event for a batch (the worker''s group commit): records each event''s terminal outcome '
  '(parallel arrays; an event given twice keeps its last) for the run holding claim p_claims[i] (NULL: no '
  'test), only while the event is processing with that many attempts (migration 0047), and marks the '
  'procrastinate jobs of the events it finished succeeded, as procrastinate_finish_job_v1 does, in one '
  'UPDATE each; a row whose claim is no longer current changes nothing, its job neither. Raises, and so '
  'fails the whole statement, when such a job is not todo or doing. Returns the ids of the events it '
  'finished.';
