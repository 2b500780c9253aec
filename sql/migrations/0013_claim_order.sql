-- The queue is walked in its index order, whatever the statistics say.
--
-- procrastinate_jobs changes shape fast: empty most of the time, then a burst of thousands of todo
-- jobs long before autovacuum analyzes it again. With the statistics of a near-empty table the planner
-- fetches a job by reading every todo job (a bitmap scan of the queue) and sorting them all by
-- (priority DESC, id): measured with an 8,000-job backlog and fresh statistics missing,
-- procrastinate_fetch_job_v2 took 15.5 ms and the batch claim 13 ms per call, so a worker spent most
-- of the database's time sorting the backlog. Walking procrastinate_jobs_priority_idx_v1 (a partial
-- index on status = 'todo', already in that order) stops at the first runnable job: 0.5 ms and 4.4 ms.
-- With sorting switched off inside the two functions, that is the only plan the planner can choose.

ALTER FUNCTION procrastinate_fetch_job_v2(character varying[], bigint) SET enable_sort = off;

CREATE FUNCTION hookline.claimable_jobs(p_queue text, p_task text, p_limit integer)
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
      AND NOT EXISTS (
          SELECT 1 FROM procrastinate_jobs AS other
          WHERE jobs.lock IS NOT NULL
            AND other.lock = jobs.lock
            AND (other.status = 'doing'
                 OR (other.status = 'todo'
                     AND (other.priority > jobs.priority
                          OR (other.priority = jobs.priority AND other.id < jobs.id)))))
    ORDER BY jobs.priority DESC, jobs.id ASC
    LIMIT greatest(p_limit, 0)
    FOR UPDATE OF jobs SKIP LOCKED
$$;

COMMENT ON FUNCTION hookline.claimable_jobs(text, text, integer) IS
  'The batch claim''s candidates (start_events in sql/queries/worker.sql): up to p_limit runnable '
  'process_event jobs of queue p_queue and task p_task, by procrastinate''s own fetch rules (runnable, no '
  'job of the same lock running or ahead of it, priority then age), locked FOR UPDATE SKIP LOCKED. '
  'Replays (recompute, force_actions) are never batch-claimed. Planned with enable_sort = off, so the '
  'queue is walked in procrastinate_jobs_priority_idx_v1 order instead of read whole and sorted.';
