-- The lean worker: an event's terminal write rides on the run's last write (store + finish in one
-- statement), and a job may claim further queued events with its own (batch claim), finishing their
-- procrastinate jobs itself.

CREATE FUNCTION hookline.finish_event(
    p_event_id bigint, p_status text, p_dry_run boolean, p_detail text, p_error text, p_job_id bigint
) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE hookline.events
    SET status = p_status,
        finished_at = now(),
        dry_run = p_dry_run,
        detail = p_detail,
        last_error = coalesce(p_error, last_error)
    WHERE id = p_event_id;
    IF p_job_id IS NOT NULL THEN
        PERFORM procrastinate_finish_job_v1(p_job_id, 'succeeded', false);
    END IF;
END;
$$;

COMMENT ON FUNCTION hookline.finish_event(bigint, text, boolean, text, text, bigint) IS
  'Records an event''s terminal outcome (succeeded, skipped, dead) and, when p_job_id is given (a job '
  'the worker claimed itself in a batch claim), marks that procrastinate job succeeded in the same '
  'statement (the only place hookline names procrastinate_finish_job_v1). The worker calls it inside the '
  'run''s last write: storing the answer or an action''s outcome.';

CREATE FUNCTION hookline.retry_job(p_job_id bigint, p_delay_seconds double precision) RETURNS void
LANGUAGE sql AS $$
    SELECT procrastinate_retry_job_v2(p_job_id, now() + make_interval(secs => p_delay_seconds), NULL, NULL, NULL);
$$;

COMMENT ON FUNCTION hookline.retry_job(bigint, double precision) IS
  'Hands a procrastinate job the worker claimed itself (batch claim) back to the queue, runnable in '
  'p_delay_seconds: a retry, a throttle hold, or 0 at shutdown. The only place hookline names '
  'procrastinate_retry_job_v2.';
