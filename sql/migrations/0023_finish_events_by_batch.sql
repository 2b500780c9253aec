-- The worker's group commit finishes its batch's events and jobs in two statements, not two per event.
--
-- insert_calls (sql/queries/worker.sql, the worker's group commit) called hookline.finish_event once per
-- row it finished: a PL/pgSQL call whose UPDATE of hookline.events and procrastinate_finish_job_v1 (a
-- second PL/pgSQL call with its own UPDATE of procrastinate_jobs) each set up an executor of their own,
-- for every event. With function timing on (track_functions = all) during the bench's dry-run scale row,
-- those two functions took 0.38 ms of the 1.2-1.6 ms of Postgres time per event. hookline.finish_events
-- does the same for a whole batch: one UPDATE of the events, one of their jobs. Row triggers fire as
-- before, once per row.
--
-- Measured as the backend's own CPU time for insert_calls (the old statement and the new one
-- interleaved on one connection, 300 statements each, twice): 248 -> 195 and 316 -> 244 us per event in
-- batches of 6, 212 -> 143 and 203 -> 136 us in batches of 20, and 622 -> 661 and 768 -> 815 us for a
-- batch of one, whose two updates take the plain lookups by key of the old functions rather than a join.
--
-- The job update restates procrastinate_finish_job_v1's (procrastinate 3.10: status, abort_requested
-- reset, attempts counted when the job was doing) and raises, as it does, when a job is not todo or
-- doing: the whole batch fails and the worker's group commit falls back to one row at a time. Compare
-- it with procrastinate's own when upgrading procrastinate (README: upgrading procrastinate);
-- test_finish_events.py checks that both leave the same job row and audit rows.

CREATE FUNCTION hookline.finish_events(
    p_event_ids bigint[], p_statuses text[], p_dry_runs boolean[], p_details text[], p_job_ids bigint[]
) RETURNS integer
LANGUAGE plpgsql
-- By primary key, whatever the statistics its plans were made with: one probe per row given. With
-- sequential scans alone turned off, plans made on small tables merge-joined the batch to a full scan of
-- events_pkey, and joined it to every todo job, read through an index (test_finish_events.py counts the
-- rows read).
SET enable_seqscan = off
SET enable_hashjoin = off
SET enable_mergejoin = off
SET plan_cache_mode = force_generic_plan  -- planned once per session, not at every call
AS $$
DECLARE
    v_events integer;
    v_jobs integer := 0;
    v_wanted integer := cardinality(array_remove(p_job_ids, NULL));  -- a job given twice is refused
BEGIN
    IF cardinality(p_event_ids) = 1 THEN  -- a batch of one, the usual one at a low rate: no join to set up
        UPDATE hookline.events
        SET status = p_statuses[1], finished_at = now(), dry_run = p_dry_runs[1], detail = p_details[1]
        WHERE id = p_event_ids[1];
    ELSE  -- an event given twice keeps its last outcome, as one call per row in order did
        UPDATE hookline.events e
        SET status = f.status, finished_at = now(), dry_run = f.dry_run, detail = f.detail
        FROM (SELECT DISTINCT ON (u.event_id) u.event_id, u.status, u.dry_run, u.detail
              FROM unnest(p_event_ids, p_statuses, p_dry_runs, p_details) WITH ORDINALITY
                   AS u(event_id, status, dry_run, detail, ord)
              ORDER BY u.event_id, u.ord DESC) AS f
        WHERE e.id = f.event_id AND e.id = ANY (p_event_ids);  -- the second test: a probe per id in any plan
    END IF;
    GET DIAGNOSTICS v_events = ROW_COUNT;

    -- procrastinate_finish_job_v1's update (procrastinate 3.10), for each job given
    IF v_wanted = 1 AND cardinality(p_job_ids) = 1 THEN
        UPDATE procrastinate_jobs
        SET status = 'succeeded', abort_requested = false,
            attempts = CASE status WHEN 'doing' THEN attempts + 1 ELSE attempts END
        WHERE id = p_job_ids[1] AND status IN ('todo', 'doing');
        GET DIAGNOSTICS v_jobs = ROW_COUNT;
    ELSIF v_wanted > 0 THEN
        UPDATE procrastinate_jobs
        SET status = 'succeeded', abort_requested = false,
            attempts = CASE status WHEN 'doing' THEN attempts + 1 ELSE attempts END
        WHERE id = ANY (p_job_ids) AND status IN ('todo', 'doing');
        GET DIAGNOSTICS v_jobs = ROW_COUNT;
    END IF;
    IF v_jobs <> v_wanted THEN
        RAISE 'Job was not found or not in "doing" or "todo" status (% of % job(s) finished)', v_jobs, v_wanted;
    END IF;
    RETURN v_events;
END;
$$;

COMMENT ON FUNCTION hookline.finish_events(bigint[], text[], boolean[], text[], bigint[]) IS
  'hookline.finish_event for a batch (the worker''s group commit): records each event''s terminal outcome '
  '(parallel arrays; an event given twice keeps its last) and marks the given procrastinate jobs '
  'succeeded, as procrastinate_finish_job_v1 does, in one UPDATE each. Raises, and so fails the whole '
  'statement, when a job is not todo or doing. Returns the number of events updated.';
