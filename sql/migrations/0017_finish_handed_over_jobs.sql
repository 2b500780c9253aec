-- The worker finishes the job procrastinate handed over in the event's last write too.
--
-- hookline.finish_event (0011) finished a procrastinate job only for the jobs a batch claim took;
-- procrastinate finished the job it handed over with its own statement after the task returned: one
-- more round trip and one more commit for every event. The worker now passes that job to the event's
-- last write as well, and procrastinate's own finish for it is skipped in the worker (worker.handover).
-- The function is unchanged; its description says what it is now given.

COMMENT ON FUNCTION hookline.finish_event(bigint, text, boolean, text, text, bigint) IS
  'Records an event''s terminal outcome (succeeded, skipped, dead) and, when p_job_id is given (the '
  'event''s procrastinate job: the one procrastinate handed over, or one the worker claimed itself in a '
  'batch claim), marks that job succeeded in the same statement (the only place hookline names '
  'procrastinate_finish_job_v1). The worker calls it inside the run''s last write: storing the answer '
  'or an action''s outcome.';
