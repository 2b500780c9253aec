-- The batch claim finds the jobs it claims by primary key, whatever the planner knows.
--
-- start_events (sql/queries/worker.sql) claimed up to N further process_event jobs with
--   UPDATE procrastinate_jobs j ... WHERE j.id = ANY (ARRAY(SELECT hookline.claimable_jobs(...)))
-- The worker's connection keeps that statement prepared, and its plan was made when procrastinate_jobs
-- was small (a new deployment, or any deployment after a prune): a sequential scan, cheapest for a few
-- pages. The plan stays cached while the table grows (finished jobs are kept until retention prunes
-- them), so every batch claim read every job ever kept: at 20,040 jobs, 20,036 rows and 310 buffers
-- (1.5 ms) to claim 4, and more with every job stored. The claim is now this function, planned with
-- sequential scans off (as hookline.claim_events, migration 0020): the ids claimable_jobs returns
-- find their rows through procrastinate_jobs_pkey, one probe each.

CREATE FUNCTION hookline.claim_more_jobs(p_job_id bigint, p_queue text, p_task text, p_limit integer)
RETURNS TABLE (job_id bigint, event_id bigint, job_attempts integer)
LANGUAGE sql
SET enable_seqscan = off  -- by id, whatever the statistics say (see above)
AS $$
    UPDATE procrastinate_jobs j
    SET status = 'doing',
        worker_id = (SELECT w.worker_id FROM procrastinate_jobs w WHERE w.id = p_job_id)
    WHERE j.id = ANY (ARRAY(SELECT hookline.claimable_jobs(p_queue, p_task, p_limit)))
    RETURNING j.id, (j.args ->> 'event_id')::bigint, j.attempts
$$;

COMMENT ON FUNCTION hookline.claim_more_jobs(bigint, text, text, integer) IS
  'The batch claim of start_events (sql/queries/worker.sql): up to p_limit further runnable process_event '
  'jobs of queue p_queue and task p_task (hookline.claimable_jobs: procrastinate''s fetch rules, FOR '
  'UPDATE SKIP LOCKED) become doing, owned by the worker that runs job p_job_id. One row per job '
  'claimed: its id, its event (args.event_id) and its attempts. Planned with sequential scans off, so '
  'each claimed job is found by primary key however large the table has grown since the plan was made '
  '(migration 0021).';
